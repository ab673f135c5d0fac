CREATE TABLE vaccinator (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at DATETIME NOT NULL,
	_updated_at DATETIME NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at DATETIME,
	code VARCHAR(32),
	"nationalIdentifier" TEXT,
	name VARCHAR(200),
	"facilityIds" JSON,
	"mobileNumber" TEXT,
	email TEXT,
	status TEXT,
	"averageRating" FLOAT,
	"trainingCertificate" TEXT,
	programs JSON,
	PRIMARY KEY (id)
);

CREATE INDEX ix_vaccinator__created_at ON vaccinator (_created_at, id);

CREATE INDEX ix_vaccinator_name ON vaccinator (name, id);

CREATE INDEX ix_vaccinator_status ON vaccinator (status, id);

CREATE UNIQUE INDEX uq_vaccinator_code ON vaccinator (code) WHERE _deleted_at IS NULL;
