-- Every saved change of a Link session bumps its version: the session store writes with a
-- compare-and-set on it (UPDATE ... WHERE id = $1 AND version = $2), so a writer that did not
-- hold the row lock cannot overwrite a newer state.
ALTER TABLE link_sessions ADD COLUMN version integer NOT NULL DEFAULT 0;
