CREATE TABLE vaccine (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at DATETIME NOT NULL,
	_updated_at DATETIME NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at DATETIME,
	code VARCHAR(32),
	name VARCHAR(200),
	manufacturer VARCHAR(200),
	"vaccinationMode" TEXT,
	"doseIntervals" JSON,
	"effectiveUntil" BIGINT,
	status TEXT,
	price FLOAT,
	"icd11Code" TEXT,
	cvx VARCHAR(3),
	snomed VARCHAR(18),
	"euMa" VARCHAR(64),
	"euMp" VARCHAR(64),
	"euVp" VARCHAR(64),
	PRIMARY KEY (id)
);

CREATE INDEX ix_vaccine__created_at ON vaccine (_created_at, id);

CREATE INDEX ix_vaccine_manufacturer_name ON vaccine (manufacturer, name, id);

CREATE INDEX ix_vaccine_status ON vaccine (status, id);

CREATE UNIQUE INDEX uq_vaccine_code ON vaccine (code) WHERE _deleted_at IS NULL;

CREATE UNIQUE INDEX uq_vaccine_name ON vaccine (name) WHERE _deleted_at IS NULL;
