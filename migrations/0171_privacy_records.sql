-- Issue 17 for the records of issue 13: shifts, tax forms and documents are personal data, sealed at
-- rest like job results and paystubs (service/pii.py), and fenced by an erasure like them.

-- Document bytes are sealed in parts of 64 KiB (service/documents.py: SEGMENT_BYTES), one row per
-- part, so a download still reads a chunk at a time. A row written before sealing is part 0 with
-- the whole document in clear (sealed = false) until `vault reencrypt` seals it.
ALTER TABLE document_contents ADD COLUMN part integer NOT NULL DEFAULT 0;
ALTER TABLE document_contents ADD COLUMN sealed boolean NOT NULL DEFAULT false;
ALTER TABLE document_contents DROP CONSTRAINT document_contents_pkey;
ALTER TABLE document_contents ADD PRIMARY KEY (document_id, part);
CREATE INDEX document_contents_unsealed ON document_contents (document_id) WHERE NOT sealed;

-- Once an erasure fenced an account, no shift, tax form or document is stored for it again
-- (migrations/0017_privacy.sql: skip_fenced_account_data).
CREATE TRIGGER shifts_fenced BEFORE INSERT OR UPDATE ON shifts
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();
CREATE TRIGGER tax_forms_fenced BEFORE INSERT OR UPDATE ON tax_forms
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();
CREATE TRIGGER documents_fenced BEFORE INSERT OR UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION skip_fenced_account_data();
