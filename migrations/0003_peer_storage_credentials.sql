-- How floe reaches each peer warehouse's storage when it is S3: endpoint, region, path style and the
-- destination's own keys (cross-account). Never returned by the management API.
ALTER TABLE peer_warehouse ADD COLUMN s3 jsonb;
