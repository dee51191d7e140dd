-- A read-only role for the API sidecar: SELECT on every table, now and later. Where the
-- migrating user may not create roles (a managed server), this is skipped with a notice; give
-- the sidecar a read-only user of your own with [api] database_url.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'xray_api') THEN
        CREATE ROLE xray_api LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO xray_api', current_database());
    GRANT USAGE ON SCHEMA public TO xray_api;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO xray_api;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO xray_api;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'xray_api role not created (no privilege); set [api] database_url';
END;
$$;
