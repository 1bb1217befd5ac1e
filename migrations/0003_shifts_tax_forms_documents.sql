-- Issue 13: shifts, tax forms and documents. Like paystubs, one row per platform record, upserted
-- by the platform's stable id; job_results keeps refreshed_at/updated_at per account and job.

-- The platform's id of a paystub's original document ('' if none): joined to documents on read.
ALTER TABLE paystubs ADD COLUMN document_external_id text NOT NULL DEFAULT '';

CREATE TABLE shifts (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts (id),
    external_id  text NOT NULL,
    shift_date   date NOT NULL,
    data         bytea NOT NULL,                  -- paylink.v1.Shift
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, external_id)
);
CREATE INDEX shifts_list ON shifts (account_id, shift_date DESC, id DESC);

CREATE TABLE tax_forms (
    id                    uuid PRIMARY KEY,
    account_id            uuid NOT NULL REFERENCES accounts (id),
    external_id           text NOT NULL,
    year                  integer NOT NULL,
    document_external_id  text NOT NULL DEFAULT '',
    data                  bytea NOT NULL,         -- paylink.v1.TaxForm
    created_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, external_id)
);
CREATE INDEX tax_forms_list ON tax_forms (account_id, year DESC, id DESC);

-- Document metadata. The bytes are kept by service.documents.DocumentStore; its PostgreSQL
-- implementation (the default) uses document_contents. At most 10 MiB per document.
CREATE TABLE documents (
    id            uuid PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (id),
    external_id   text NOT NULL,
    type          smallint NOT NULL,              -- paylink.v1.DocumentType
    name          text NOT NULL,
    content_type  text NOT NULL,
    size_bytes    integer NOT NULL CHECK (size_bytes BETWEEN 0 AND 10485760),
    sha256        bytea NOT NULL,
    pay_date      date,                           -- paystub documents
    year          integer NOT NULL DEFAULT 0,     -- tax form documents
    sort_date     date NOT NULL,                  -- pay date, or 31 December of the tax year
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, external_id)
);
CREATE INDEX documents_list ON documents (account_id, sort_date DESC, id DESC);

CREATE TABLE document_contents (
    document_id  uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    content      bytea NOT NULL
);
