-- socketchat_append runs one statement whose plan does not depend on the batch's values (key
-- lookups only, `enable_seqscan = off`). PL/pgSQL otherwise plans it again for each call with the
-- call's arrays (a custom plan), which was most of PostgreSQL's CPU when batches are small (one
-- send per call at a few hundred sends/s): keep one generic plan per connection.
ALTER FUNCTION socketchat_append(bigint[], bigint[], bytea[], text[], bigint)
    SET plan_cache_mode = force_generic_plan;
