CREATE TABLE vaccinator (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at TIMESTAMP WITH TIME ZONE,
	code VARCHAR(32),
	"nationalIdentifier" TEXT,
	name VARCHAR(200),
	"facilityIds" JSONB,
	"mobileNumber" TEXT,
	email TEXT,
	status TEXT,
	"averageRating" FLOAT(53),
	"trainingCertificate" TEXT,
	programs JSONB,
	PRIMARY KEY (id)
);

CREATE INDEX ix_vaccinator__created_at ON vaccinator (_created_at, id);

CREATE INDEX ix_vaccinator_name ON vaccinator (name, id);

CREATE INDEX ix_vaccinator_status ON vaccinator (status, id);

CREATE UNIQUE INDEX uq_vaccinator_code ON vaccinator (code) WHERE _deleted_at IS NULL;
