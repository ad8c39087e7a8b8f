-- A database and role for the Prefect server (run once, as PostgreSQL's superuser):
--   sudo -u postgres psql -f infra/prefect/postgres-setup.sql
-- Then set the password (\password prefect) and point the server at it (prefect-server.env).
CREATE ROLE prefect LOGIN;
CREATE DATABASE prefect OWNER prefect ENCODING 'UTF8';
