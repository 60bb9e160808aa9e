"""SQL of the business endpoints."""

# the caller's user role and membership in account $2 (no row: no such account)
ACCESS = """
SELECT u.user_role, m.member_role
FROM account a
JOIN app_user u ON u.id = $1
LEFT JOIN account_member m ON m.account_id = a.id AND m.user_id = u.id
WHERE a.id = $2"""

ACCOUNT = "SELECT * FROM account WHERE id = $1"
ACCOUNT_INSERT = "INSERT INTO account (name, billing_email) VALUES ($1, $2) RETURNING *"

MEMBER_COLUMNS = """
SELECT m.user_id, m.member_role, m.created_at, u.nickname
FROM account_member m JOIN app_user u ON u.id = m.user_id"""
MEMBERS = MEMBER_COLUMNS + " WHERE m.account_id = $1 ORDER BY m.created_at, m.user_id"
MEMBER = MEMBER_COLUMNS + " WHERE m.account_id = $1 AND m.user_id = $2"
MEMBER_UPSERT = """
INSERT INTO account_member (account_id, user_id, member_role) VALUES ($1, $2, $3)
ON CONFLICT (account_id, user_id) DO UPDATE SET member_role = excluded.member_role"""
ADMINS = ("SELECT user_id FROM account_member WHERE account_id = $1 "
          "AND member_role = 'admin' ORDER BY user_id")

AUDIT_INSERT = """
INSERT INTO account_audit (account_id, user_id, action, entity_id, before, after)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)"""
AUDIT = """
SELECT id, at, user_id, action, entity_id, before::text AS before, after::text AS after
FROM account_audit WHERE account_id = $1 ORDER BY id DESC LIMIT $2"""

HIVE = """
SELECT h.id, h.account_id, h.name, t.code AS type, s.code AS status, h.capacity,
       h.timezone, h.description, h.updated_at,
       a.street, a.city, a.country, a.zip, a.latitude, a.longitude
FROM hive h
JOIN hive_type t ON t.id = h.hive_type_id
JOIN hive_status s ON s.id = h.status_id
JOIN address a ON a.id = h.address_id
WHERE h.id = $1"""
ACCOUNT_HIVES = HIVE.replace("WHERE h.id = $1", "WHERE h.account_id = $1 ORDER BY h.id")
# HivePatch field -> hive column (type and status are looked up to ids first)
HIVE_COLUMNS = {"name": "name", "capacity": "capacity", "timezone": "timezone",
                "description": "description", "type": "hive_type_id",
                "status": "status_id"}
ADDRESS_INSERT = """
INSERT INTO address (street, city, zip, country, latitude, longitude)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"""
ADDRESS_UPDATE = """
UPDATE address SET street = $2, city = $3, zip = $4, country = $5, latitude = $6,
                   longitude = $7
WHERE id = (SELECT address_id FROM hive WHERE id = $1)"""
HIVE_INSERT = """
INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name, description,
                  timezone, capacity)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id"""
HIVE_CLOSE = """
UPDATE hive SET status_id = (SELECT id FROM hive_status WHERE code = 'closed')
WHERE id = $1"""

# constraint -> the body field it is about (a 422 names it)
CHECK_FIELDS = {"hive_timezone_valid": "timezone", "hive_timezone_check": "timezone",
                "hive_capacity_check": "capacity", "hive_name_check": "name",
                "address_zip_check": "address.zip", "address_street_check": "address.street",
                "address_city_check": "address.city",
                "address_coordinates_paired": "address.longitude"}

DEAL_COLUMNS = ("kind", "title", "description", "terms", "valid_from", "valid_until",
                "daily_weekdays", "daily_start", "daily_end")
DEAL = """
SELECT d.id, d.hive_id, h.account_id, d.kind, d.title, d.description, d.terms,
       d.valid_from, d.valid_until, d.daily_weekdays, d.daily_start, d.daily_end,
       n.starts_at, n.ends_at
FROM deal d
JOIN hive h ON h.id = d.hive_id,
LATERAL deal_next_occurrence(d, h.timezone, now()) n
WHERE d.id = $1"""
DEAL_INSERT = f"""
INSERT INTO deal (hive_id, {", ".join(DEAL_COLUMNS)})
VALUES ($1, {", ".join(f"${i}" for i in range(2, len(DEAL_COLUMNS) + 2))}) RETURNING id"""

CONFIG = """(SELECT row_to_json(c)::text FROM (
    SELECT id, threshold_cm, reporting_interval_min, status_interval_min, event_threshold,
           created_at, applied_at
    FROM sensor_config WHERE sensor_id = s.id AND state = '{state}') c)"""
SENSORS = f"""
SELECT s.external_id, s.name, s.firmware, s.installed_at, st.battery_mv,
       NULLIF(st.csq, 99) AS csq, st.firmware AS firmware_version, st.received_at,
       CASE WHEN st.received_at IS NULL THEN 'never_seen'
            WHEN st.received_at < now() - make_interval(mins => 2 * coalesce(
                (SELECT status_interval_min FROM sensor_config
                 WHERE sensor_id = s.id AND state = 'applied'), 1440)) THEN 'silent'
            ELSE 'ok' END AS status,
       {CONFIG.format(state="pending")} AS pending,
       {CONFIG.format(state="applied")} AS applied
FROM sensor s LEFT JOIN sensor_status st ON st.sensor_id = s.id
WHERE s.hive_id = $1
ORDER BY s.external_id"""

IMAGE = """
SELECT i.id, i.hive_id, h.account_id, i.url, i.kind, i.position, i.caption
FROM hive_image i JOIN hive h ON h.id = i.hive_id
WHERE i.id = $1"""
# the first image of a hive is its cover; the others go last
IMAGE_INSERT = """
INSERT INTO hive_image (hive_id, url, caption, kind, position)
SELECT $1, $2, $3,
       CASE WHEN EXISTS (SELECT 1 FROM hive_image WHERE hive_id = $1 AND kind = 'cover')
            THEN 'secondary' ELSE 'cover' END,
       coalesce((SELECT max(position) + 1 FROM hive_image WHERE hive_id = $1), 0)
RETURNING id"""

SENSOR_ACCOUNT = """
SELECT s.id, h.account_id FROM sensor s LEFT JOIN hive h ON h.id = s.hive_id
WHERE s.external_id = $1"""
IS_OPERATOR = "SELECT user_role = 'operator' FROM app_user WHERE id = $1"
