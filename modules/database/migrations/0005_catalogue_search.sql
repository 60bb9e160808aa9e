-- 0005_catalogue_search: what the public catalogue API (modules.hives) searches with.
--
--   * PostGIS: `address.geog`, a geography point generated from longitude/latitude (so it
--     is always in step with them; adding the column backfills every existing address),
--     GiST-indexed for ST_DWithin (radius) and `<->` (nearest first, in metres);
--   * unaccent + pg_trgm: `search_text(text)`, lower-cased and accent-free, immutable so
--     it can be indexed; name search is `search_text($q) <% search_text(name)`
--     (word similarity: prefixes and typos match), ranked by word_similarity;
--   * change notifications: every insert/update/delete of a hive, its address, images
--     or deals sends NOTIFY bizzyd_catalogue '<hive id> <version>', where the version is
--     the next value of the sequence catalogue_version. Caches key their entries by
--     these versions (docs/api.md "Caching").

CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- The search_path is fixed at creation (not inlined, but immutable for indexes: the
-- unaccent dictionary is part of the schema this migration runs in).
CREATE FUNCTION search_text(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT AS $$
    SELECT lower(unaccent('unaccent'::regdictionary, t))
$$;
COMMENT ON FUNCTION search_text(text) IS
    'lower(unaccent(text)): the form names are searched in (indexed with gin_trgm_ops).';

ALTER TABLE address ADD COLUMN geog geography(Point, 4326)
    GENERATED ALWAYS AS (
        CASE WHEN latitude IS NOT NULL
             THEN ST_SetSRID(ST_MakePoint(longitude, latitude), 4326)::geography
        END) STORED;
COMMENT ON COLUMN address.geog IS
    'WGS84 point of longitude/latitude (generated); distances in metres.';
CREATE INDEX address_geog_idx ON address USING gist (geog);
CREATE INDEX address_city_search_idx ON address (search_text(city));
CREATE INDEX hive_name_search_idx ON hive USING gin (search_text(name) gin_trgm_ops);

CREATE SEQUENCE catalogue_version;
COMMENT ON SEQUENCE catalogue_version IS
    'Version of the catalogue (hives, addresses, images, deals, types): each change takes '
    'the next value and announces it with NOTIFY bizzyd_catalogue.';

CREATE FUNCTION catalogue_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hive bigint;
    row_data record;
BEGIN
    row_data := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    IF TG_TABLE_NAME = 'hive' THEN
        hive := row_data.id;
    ELSIF TG_TABLE_NAME = 'address' THEN
        SELECT h.id INTO hive FROM hive h WHERE h.address_id = row_data.id;
    ELSIF TG_TABLE_NAME = 'hive_type' THEN
        hive := 0;  -- 0: everything
    ELSE
        hive := row_data.hive_id;
    END IF;
    IF hive IS NOT NULL THEN
        PERFORM pg_notify('bizzyd_catalogue',
                          hive::text || ' ' || nextval('catalogue_version')::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION catalogue_notify() IS
    'AFTER trigger: NOTIFY bizzyd_catalogue ''<hive id> <version>'' (hive 0: all).';

CREATE TRIGGER hive_catalogue_notify AFTER INSERT OR UPDATE OR DELETE ON hive
    FOR EACH ROW EXECUTE FUNCTION catalogue_notify();
CREATE TRIGGER address_catalogue_notify AFTER UPDATE ON address
    FOR EACH ROW EXECUTE FUNCTION catalogue_notify();
CREATE TRIGGER hive_image_catalogue_notify AFTER INSERT OR UPDATE OR DELETE ON hive_image
    FOR EACH ROW EXECUTE FUNCTION catalogue_notify();
CREATE TRIGGER deal_catalogue_notify AFTER INSERT OR UPDATE OR DELETE ON deal
    FOR EACH ROW EXECUTE FUNCTION catalogue_notify();
CREATE TRIGGER hive_type_catalogue_notify AFTER INSERT OR UPDATE OR DELETE ON hive_type
    FOR EACH ROW EXECUTE FUNCTION catalogue_notify();
