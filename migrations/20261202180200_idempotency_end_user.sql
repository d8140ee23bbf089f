-- Idempotency records belong to the caller: the API key *and* the end user of a verified user token
-- (its `sub`; empty when the request carried none). One shopper's stored response is never replayed
-- to another shopper or to a caller without a token, and nobody can claim another shopper's key.
ALTER TABLE idempotency_keys ADD COLUMN end_user text NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (api_key_id, end_user, idempotency_key);
