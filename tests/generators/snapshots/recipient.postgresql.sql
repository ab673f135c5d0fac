CREATE TABLE recipient (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at TIMESTAMP WITH TIME ZONE,
	identity TEXT,
	name VARCHAR(200),
	dob DATE,
	yob BIGINT,
	gender TEXT,
	nationality VARCHAR(100),
	phone TEXT,
	email TEXT,
	address JSONB,
	"enrollmentCode" VARCHAR(32),
	comorbidities JSONB,
	"enrollmentType" TEXT,
	_bi_identity VARCHAR(64),
	PRIMARY KEY (id)
);

CREATE INDEX ix_recipient__created_at ON recipient (_created_at, id);

CREATE INDEX ix_recipient_name ON recipient (name, id);

CREATE INDEX ix_recipient_name_dob ON recipient (name, dob, id);

CREATE UNIQUE INDEX "uq_recipient_enrollmentCode" ON recipient ("enrollmentCode") WHERE _deleted_at IS NULL;

CREATE UNIQUE INDEX uq_recipient_identity ON recipient (_bi_identity) WHERE _deleted_at IS NULL;
