-- job_machine's least-privilege roles (docs/roles.md).
--
-- Install after sql/create_tables.sql, as the owner of the jobmachine
-- schema (a superuser will do). The first run also needs CREATEROLE, to
-- create the roles; later runs only re-grant:
--
--   psql -v ON_ERROR_STOP=1 -f sql/roles.sql
--   job_machine.install_roles(conn)        (the same file, from Python)
--
-- It creates four NOLOGIN group roles, which you GRANT to your login users:
--
--   jobmachine_sender  send tasks (every option), read their replies and
--                      where they stand, notes, named locks; the Perl
--                      Job::Machine client too
--   jobmachine_worker  run workers: claim, answer, retry and fail tasks,
--                      register and heartbeat, rescue dead workers'
--                      tasks, housekeeping (revive, retention, dispatch
--                      of cron schedules), notes, named locks; the Perl
--                      Job::Machine worker too
--   jobmachine_reader  SELECT on the schema and nothing else: Admin.stats,
--                      history, list_tasks, task_info, workers (a
--                      read-only dashboard)
--   jobmachine_admin   jobmachine_reader, plus an operator's actions:
--                      cancel, retry, remove, purge, reset, pause and
--                      resume queues, stop workers, notes, cron schedules
--
-- Other names: roles are cluster-wide, so two applications with a
-- jobmachine schema each in one cluster should not share them. Set
-- jobmachine.role_prefix for the session (PGOPTIONS='-c
-- jobmachine.role_prefix=billing_jm' psql -f sql/roles.sql, or
-- install_roles(conn, prefix="billing_jm")) to get billing_jm_sender and
-- so on; lower-case letters, digits and underscores.
--
-- Idempotent, and convergent: each run first revokes everything the four
-- roles hold in the jobmachine schema, then grants what is below, in one
-- transaction (sessions never see the roles without their privileges). So
-- run it again after every schema upgrade, from the same release as
-- create_tables.sql: its grants name that release's tables and columns,
-- and a privilege it no longer grants is gone. Grant nothing to these
-- roles by hand; give extra privileges to roles of your own.
--
-- Grants nothing outside the jobmachine schema. What the roles use that
-- every role has by default, through PUBLIC: CONNECT on the database,
-- LISTEN, NOTIFY and pg_notify(), advisory locks, set_config() of user
-- settings, and reading the catalog (pg_locks for the liveness check of
-- docs/liveness.md, pg_class for Admin.stats).
--
-- Nor does it rely on PUBLIC's EXECUTE on the schema's own functions:
-- each (jobmachine.lock(), task_note(), ...) is granted to the roles that
-- call it; create_tables.sql revokes PUBLIC's EXECUTE on those that run as
-- the schema's owner.
--
-- It warns when every role (PUBLIC) may CREATE in a schema of the default
-- search_path (public before PostgreSQL 15, and in clusters upgraded from
-- it): a sender could put a function there that shadows a built-in for
-- whoever has that schema on its path. job_machine's own functions and
-- connections pin their search_path (docs/roles.md); a Perl client, psql
-- and your own code do not.

BEGIN;

DO $roles$
DECLARE
    prefix text := coalesce(nullif(current_setting('jobmachine.role_prefix', true), ''),
                            'jobmachine');
    sender text := prefix || '_sender';
    worker text := prefix || '_worker';
    reader text := prefix || '_reader';
    admin  text := prefix || '_admin';
    installed integer;
    r text;
    g record;
    default_path text[];
BEGIN
    -- Serialise with a concurrent install or upgrade (create_tables.sql
    -- takes the same lock), and with another run of this file.
    PERFORM pg_advisory_xact_lock(hashtext('jobmachine.install'));
    -- Up to 56 bytes, so the longest name (_sender, _worker, _reader) is a
    -- whole identifier (63 bytes).
    IF prefix !~ '^[a-z_][a-z0-9_]{0,55}$' THEN
        RAISE EXCEPTION 'invalid role prefix %: up to 56 lower-case letters, digits and underscores, not starting with a digit', quote_literal(prefix);
    END IF;
    IF to_regclass('jobmachine.schema_version') IS NOT NULL THEN
        SELECT max(v.version) INTO installed FROM jobmachine.schema_version v;
    END IF;
    -- The grants below name version 5's schedule table, version 6's
    -- part table, version 7's task.trace_context, version 8's
    -- task.max_runtime, task.orphan_after and worker.dead_after, version
    -- 9's task.time_limit, expires_at and cancelled_at, and version 10's
    -- queue limits and worker commands.
    IF installed IS NULL OR installed < 10 THEN
        RAISE EXCEPTION 'the jobmachine schema is missing or older than version 10 (found %)', coalesce(installed::text, 'none')
            USING HINT = 'install or upgrade it first: psql -f sql/create_tables.sql, or job_machine.install_schema()';
    END IF;

    -- The functions granted below come with this release's
    -- create_tables.sql (in place, at version 4).
    IF to_regprocedure('jobmachine.task_note(bigint, jsonb, text[])') IS NULL
       OR to_regprocedure('jobmachine.reset()') IS NULL THEN
        RAISE EXCEPTION 'the jobmachine schema lacks the functions this roles.sql grants (jobmachine.task_note() and others)'
            USING HINT = 'run create_tables.sql of the same release first: psql -f sql/create_tables.sql, or job_machine.install_schema()';
    END IF;

    -- The group roles (cluster-wide): created when missing, left as they
    -- are when present.
    FOREACH r IN ARRAY ARRAY[reader, sender, worker, admin] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created at the same moment from another database
            END;
        ELSIF (SELECT rolcanlogin FROM pg_roles WHERE rolname = r) THEN
            RAISE WARNING 'role % can log in; it is meant as a group role: GRANT it to login users instead', r;
        END IF;
    END LOOP;
    -- The operator reads what the dashboard reads. Granting a role needs
    -- ADMIN OPTION on it (or CREATEROLE before PostgreSQL 16), so only when
    -- it is not granted yet: a re-run by the schema owner needs neither.
    IF NOT EXISTS (SELECT 1 FROM pg_auth_members
                    WHERE roleid = reader::regrole AND member = admin::regrole) THEN
        EXECUTE format('GRANT %I TO %I', reader, admin);
    END IF;

    -- Start from nothing (column privileges go with the table's).
    FOREACH r IN ARRAY ARRAY[reader, sender, worker, admin] LOOP
        EXECUTE format('REVOKE ALL ON SCHEMA jobmachine FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA jobmachine FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA jobmachine FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA jobmachine FROM %I', r);
    END LOOP;

    -- What each role may do, and which statements need it
    -- (job_machine/queries.sql; the Perl Job::Machine 0.19 statements are
    -- replayed in tests/integration/test_perl_compat.py, and test_roles.py
    -- runs them as these roles). Triggers run as the user whose
    -- statement fired them: whoever sets a status to done or failed, or
    -- deletes a task that was not done, also needs what task_settled()
    -- does to the task's blocked children (lock and update their status
    -- and modified time, insert a ParentFailed error result, pg_notify).
    -- Identity columns need no privilege on their sequence, but the Perl
    -- tables (class, task, result) of a Perl database upgraded in place
    -- keep their serial columns (nextval), and the Perl code reads currval
    -- (DBD::Pg's last_insert_id): hence USAGE on the sequences of those a
    -- role inserts into. The tables job_machine added (worker, lock) have
    -- identity columns everywhere.
    FOR g IN
        SELECT m.grantee, m.privileges, m.object FROM (VALUES
        -- reader: SELECT, nothing else.
        (reader, 'USAGE', 'SCHEMA jobmachine'),
        (reader, 'SELECT', 'ALL TABLES IN SCHEMA jobmachine'),

        -- sender
        (sender, 'USAGE', 'SCHEMA jobmachine'),
        -- task_insert*: find the queue (queue_find(), which locks its
        -- row against housekeeping's queue_prune), or create it (Perl:
        -- SELECT * and INSERT ... RETURNING *).
        (sender, 'SELECT, INSERT (name)', 'TABLE jobmachine.class'),
        (sender, 'EXECUTE', 'FUNCTION jobmachine.queue_find(text)'),
        -- Every notify of a queue names its channel through queue_channel()
        -- (the triggers a task's update fires, too).
        (sender, 'EXECUTE', 'FUNCTION jobmachine.queue_channel(text)'),
        -- task_insert*, task_info, task_answer(ed), task_unique_holder.
        -- Only the columns send() sets: not task_id, worker_id, attempts,
        -- started, has_children or notes. trace_context: the sender's
        -- span (version 7); time_limit, expires_at: its deadlines
        -- (version 9). Not cancelled_at: a sender cancels nothing.
        (sender, 'SELECT, INSERT (class_id, parameters, status, priority, run_after,'
                 ' max_attempts, title, grouping, remove_after, keep_for, unique_key,'
                 ' parents, trace_context, time_limit, expires_at)', 'TABLE jobmachine.task'),
        -- No UPDATE at all (it could SELECT ... FOR UPDATE any task row
        -- and hold it): task_insert_full marks the parents of a child with
        -- task_mark_parents(), and task_note merges notes with task_note(),
        -- both the schema owner's (below). A status other than waiting,
        -- or blocked on parents, is refused by the trigger
        -- task_insert_status.
        (sender, 'EXECUTE', 'FUNCTION jobmachine.task_mark_parents(bigint[])'),
        (sender, 'EXECUTE', 'FUNCTION jobmachine.task_note(bigint, jsonb, text[])'),
        -- Replies: read only. A sender writes no result (it could forge
        -- the reply of any task); the ParentFailed error of a child whose
        -- parent failed already is written by the trigger
        -- task_parent_failed, which runs as the schema's owner.
        (sender, 'SELECT', 'TABLE jobmachine.result'),
        -- Streamed parts (parts()): read only, like the replies.
        (sender, 'SELECT', 'TABLE jobmachine.part'),
        -- task_info names the worker running the task; not its queues,
        -- heartbeat or commands.
        (sender, 'SELECT (worker_id, host, pid)', 'TABLE jobmachine.worker'),
        -- lock(), lock_free(), unlock(): jobmachine.lock() and
        -- jobmachine.unlock() run as the schema's owner; no privilege on
        -- the lock table (DELETE would let it LOCK TABLE it).
        (sender, 'EXECUTE', 'FUNCTION jobmachine.lock(text, double precision, integer)'),
        (sender, 'EXECUTE', 'FUNCTION jobmachine.unlock(text, bigint)'),
        (sender, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('jobmachine.class', 'class_id')),
        (sender, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('jobmachine.task', 'task_id')),

        -- worker
        (worker, 'USAGE', 'SCHEMA jobmachine'),
        -- task_claim, task_next_due, queue_names: queues and whether paused.
        (worker, 'SELECT', 'TABLE jobmachine.class'),
        -- task_claim (status, started, attempts, worker_id), task_finish,
        -- task_done(_many), task_fail_attempt (run_after, retry_at), task_unclaim,
        -- task_release_held, worker_heartbeat (modified), housekeeping:
        -- worker_reap, task_give_up, task_revive. Only columns: no
        -- table-level UPDATE or DELETE, which would let it LOCK TABLE
        -- task. Retention (task_remove_old) deletes finished tasks with
        -- task_delete_finished(), notes go through task_note(), both the
        -- schema owner's. Never INSERT: a worker does not send (grant
        -- jobmachine_sender too for one that does). The claim also stamps
        -- the worker's policy (version 8): max_attempts and keep_for where
        -- the sender set none, max_runtime and orphan_after.
        (worker, 'SELECT, UPDATE (status, modified, started, attempts, uncounted_attempts,'
                 ' worker_id, run_after, retry_at, max_attempts, keep_for, max_runtime,'
                 ' orphan_after)', 'TABLE jobmachine.task'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.task_delete_finished(bigint[])'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.queue_channel(text)'),
        -- Housekeeping removes empty, unused queues (queue_prune), with no
        -- DELETE on class.
        (worker, 'EXECUTE', 'FUNCTION jobmachine.queue_prune(double precision, integer, timestamptz)'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.task_note(bigint, jsonb, text[])'),
        (worker, 'SELECT, INSERT (task_id, result, resulttype)', 'TABLE jobmachine.result'),
        -- part_insert (send_part); the parts go with their task by ON
        -- DELETE CASCADE.
        (worker, 'SELECT, INSERT (task_id, attempt, seq, data)', 'TABLE jobmachine.part'),
        -- worker_register, worker_heartbeat (an upsert that sets seen),
        -- worker_reap (deletes dead workers: the one table-level DELETE
        -- left, see docs/roles.md). Not command: a worker cannot stop the
        -- others.
        (worker, 'SELECT, INSERT (worker_id, host, pid, queues, dead_after), UPDATE (seen), DELETE',
                 'TABLE jobmachine.worker'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.lock(text, double precision, integer)'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.unlock(text, bigint)'),
        (worker, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('jobmachine.result', 'result_id')),
        -- Cron schedules (version 5): schedule_due reads the due ones;
        -- schedule_fire() sends a tick's task and advances the schedule
        -- (it runs as the schema's owner: the worker sends only what an
        -- admin scheduled). Never INSERT, UPDATE or DELETE: a worker does
        -- not define schedules (App.register_schedules as the admin does).
        (worker, 'SELECT', 'TABLE jobmachine.schedule'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.schedule_fire(bigint, timestamptz, text, text,'
                 ' timestamptz, timestamptz)'),
        -- Fleet-wide limits (version 10): task_claim reads whether its
        -- queues have limits, takes their room with queue_limit_room()
        -- (the schema owner's: it locks the limit rows, which no role may
        -- do at will) and records what a rate counts. Never UPDATE or
        -- DELETE: a worker does not set limits.
        (worker, 'SELECT', 'TABLE jobmachine.queue_limit'),
        (worker, 'EXECUTE', 'FUNCTION jobmachine.queue_limit_room(text[], timestamptz)'),
        (worker, 'INSERT (queue, grouping, started, n)', 'TABLE jobmachine.queue_limit_start'),
        -- Commands of Admin.broadcast (version 10), taken with each
        -- heartbeat through worker_commands_take() (the schema owner's):
        -- a worker neither sends commands nor drops the others'.
        (worker, 'EXECUTE', 'FUNCTION jobmachine.worker_commands_take(bigint)'),

        -- admin: reader's SELECTs (role membership, above), and
        (admin, 'USAGE', 'SCHEMA jobmachine'),
        -- admin_retry to another queue finds it (queue_find()) or
        -- creates it; admin_pause.
        (admin, 'INSERT (name), UPDATE (paused, modified)', 'TABLE jobmachine.class'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.queue_find(text)'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.queue_channel(text)'),
        -- admin_cancel (cancelled_at, version 9), admin_retry (a fresh
        -- start, maybe elsewhere or at another priority; its deadline and
        -- cancel cleared). Only columns, no DELETE (LOCK TABLE):
        -- admin_remove and admin_purge delete through task_delete() and
        -- task_delete_finished(), notes (the CLI's tasks note) through
        -- task_note(), the schema owner's.
        (admin, 'UPDATE (status, modified, attempts, uncounted_attempts, run_after, retry_at,'
                ' priority, class_id, expires_at, cancelled_at)', 'TABLE jobmachine.task'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.task_delete(bigint[])'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.task_delete_finished(bigint[])'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.task_note(bigint, jsonb, text[])'),
        -- admin_reset (Admin.reset(): every task, lock and schedule).
        (admin, 'EXECUTE', 'FUNCTION jobmachine.reset()'),
        -- admin_cancel's Cancelled error.
        (admin, 'INSERT (task_id, result, resulttype)', 'TABLE jobmachine.result'),
        -- admin_worker_command (stop_workers).
        (admin, 'UPDATE (command)', 'TABLE jobmachine.worker'),
        (admin, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('jobmachine.class', 'class_id')),
        (admin, 'USAGE', 'SEQUENCE ' || pg_get_serial_sequence('jobmachine.result', 'result_id')),
        -- Cron schedules (version 5): schedule_upsert (Admin.schedule,
        -- App.register_schedules), schedule_pause, schedule_resume,
        -- schedule_delete (unschedule). Not last_run or last_task_id,
        -- which only schedule_fire() writes.
        (admin, 'INSERT (name, cron, timezone, queue, parameters, priority, max_attempts, title,'
                ' grouping, keep_for, paused, next_run), UPDATE (cron, timezone, queue, parameters,'
                ' priority, max_attempts, title, grouping, keep_for, paused, next_run, modified),'
                ' DELETE', 'TABLE jobmachine.schedule'),
        -- Fleet-wide limits (version 10): admin_limits_set (an upsert);
        -- admin_limits_clear through queue_limit_clear() (the schema
        -- owner's: no DELETE, which would let it LOCK TABLE them).
        (admin, 'INSERT (queue, concurrency, rate, per, per_grouping), UPDATE (concurrency, rate,'
                ' per, per_grouping, modified)', 'TABLE jobmachine.queue_limit'),
        (admin, 'EXECUTE', 'FUNCTION jobmachine.queue_limit_clear(text)'),
        -- admin_broadcast (Admin.broadcast): commands for the workers.
        (admin, 'INSERT (worker_id, command, args)', 'TABLE jobmachine.worker_command')
        ) AS m (grantee, privileges, object)
        -- A column without a sequence (none in a schema made by
        -- create_tables.sql or by Perl) has nothing to grant.
        WHERE m.object IS NOT NULL
    LOOP
        EXECUTE format('GRANT %s ON %s TO %I', g.privileges, g.object, g.grantee);
    END LOOP;

    -- The default search_path: the built-in one ("$user", public), and the
    -- ones set for every database or for this one (not the session's own:
    -- job_machine pins that). "$user" stands for a schema named after a role.
    SELECT array_agg(DISTINCT trim(both '"' FROM trim(s.name)))
      INTO default_path
      FROM (SELECT boot_val AS path FROM pg_settings WHERE name = 'search_path'
            UNION ALL
            SELECT substr(c.setting, length('search_path=') + 1)
              FROM pg_db_role_setting d, unnest(d.setconfig) AS c (setting)
             WHERE d.setrole = 0 AND c.setting LIKE 'search_path=%'
               AND d.setdatabase IN (0, (SELECT oid FROM pg_database
                                          WHERE datname = current_database()))) AS p,
           regexp_split_to_table(p.path, ',') AS s (name);
    FOR r IN
        SELECT n.nspname
          FROM pg_namespace n
         WHERE (n.nspname = ANY (default_path)
                OR ('$user' = ANY (default_path)
                    AND n.nspname IN (SELECT rolname FROM pg_roles)))
           AND EXISTS (SELECT 1
                         FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                        WHERE a.grantee = 0 AND a.privilege_type = 'CREATE')
         ORDER BY 1
    LOOP
        RAISE WARNING 'every role may CREATE in schema %, which is on the default search_path: a sender could put a function there that runs as whoever calls a built-in it shadows', quote_ident(r)
            USING HINT = format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC (the default since PostgreSQL 15); job_machine pins its own search_path, see docs/roles.md', r);
    END LOOP;
END
$roles$;

COMMIT;
