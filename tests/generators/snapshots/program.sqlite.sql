CREATE TABLE program (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at DATETIME NOT NULL,
	_updated_at DATETIME NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at DATETIME,
	code VARCHAR(32),
	name VARCHAR(200),
	description TEXT,
	"logoURL" TEXT,
	"startDate" DATE,
	"endDate" DATE,
	status TEXT,
	"vaccineIds" JSON,
	PRIMARY KEY (id)
);

CREATE INDEX ix_program__created_at ON program (_created_at, id);

CREATE INDEX ix_program_status ON program (status, id);

CREATE UNIQUE INDEX uq_program_code ON program (code) WHERE _deleted_at IS NULL;

CREATE UNIQUE INDEX uq_program_name ON program (name) WHERE _deleted_at IS NULL;
