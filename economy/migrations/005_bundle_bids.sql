-- Bundle bids: several resources at one price for the whole, won together or not at all
-- (economy/auction.ts). An agent needs cpu and memory in the same window to run; bid for
-- separately, it could win one, lose the other and pay for what it cannot use.
--
-- A bundle bid is a row of `bids` like any other, so everything that counts open bids counts it:
-- its amount is reserved while it is open, burned or released when its window clears, released
-- when its agent is terminated. It has resource 'bundle', quantity 1 and price_per_unit = amount =
-- the bundle's price; `components` holds what it asks for ({"cpu": millicores, "memory": MiB,
-- "tokens": n, "attention": n}, absent = none).
--
-- A winning bundle writes a resource_bundles row (what the agent runs with, in which window) and
-- its bid points at it (bids.bundle_id).

ALTER TABLE bids DROP CONSTRAINT bids_resource_check;
ALTER TABLE bids ADD CONSTRAINT bids_resource_check CHECK (resource IN ('cpu', 'memory', 'tokens', 'attention', 'bundle'));
ALTER TABLE bids ADD COLUMN components jsonb;
ALTER TABLE bids ADD CONSTRAINT bids_bundle CHECK (
  (resource = 'bundle') = (components IS NOT NULL)
  AND (components IS NULL OR (jsonb_typeof(components) = 'object' AND quantity = 1)));
