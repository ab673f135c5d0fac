CREATE TABLE facility (
	id VARCHAR(36) NOT NULL,
	_version INTEGER NOT NULL,
	_created_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
	_created_by VARCHAR(200),
	_updated_by VARCHAR(200),
	_deleted_at TIMESTAMP WITH TIME ZONE,
	code VARCHAR(32),
	name VARCHAR(200),
	category TEXT,
	type TEXT,
	status TEXT,
	address JSONB,
	"geoLocation" JSONB,
	contact VARCHAR(20),
	email VARCHAR(254),
	"websiteUrl" TEXT,
	"operatingHourStart" TEXT,
	"operatingHourEnd" TEXT,
	"averageRating" FLOAT(53),
	admins JSONB,
	programs JSONB,
	PRIMARY KEY (id)
);

CREATE INDEX ix_facility__created_at ON facility (_created_at, id);

CREATE INDEX ix_facility_category ON facility (category, id);

CREATE INDEX ix_facility_name ON facility (name, id);

CREATE INDEX ix_facility_status ON facility (status, id);

CREATE UNIQUE INDEX uq_facility_code ON facility (code) WHERE _deleted_at IS NULL;
