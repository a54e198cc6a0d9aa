-- Every statement job_machine runs at run time, one named block each.
-- Loaded by job_machine/_queries.py; the Store (job_machine/_async/store.py)
-- is the only code that executes them. Each state change is one statement,
-- so one round trip and atomic even in autocommit.
-- Parameters are %(name)s placeholders; times compare with
-- coalesce(%(now)s, now()) so tests can move the clock without sleeping.

-- name: task_insert
-- Insert a waiting task into a queue (creating the queue's class row when it
-- is missing) and notify the queue's channel. Returns no row when a
-- concurrent sender created the class at the same moment: run it again.
WITH found AS (
    SELECT class_id FROM jobmachine.class WHERE name = %(queue)s
), created AS (
    INSERT INTO jobmachine.class (name)
    SELECT %(queue)s WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (name) DO NOTHING
    RETURNING class_id
), cls AS (
    SELECT class_id FROM found UNION ALL SELECT class_id FROM created
), task AS (
    INSERT INTO jobmachine.task (class_id, parameters, status)
    SELECT class_id, %(parameters)s, 0 FROM cls LIMIT 1
    RETURNING task_id
)
SELECT task_id, pg_notify(%(channel)s, task_id::text) FROM task

-- name: task_claim
-- Take the oldest waiting, due task of any of the given queues, mark it
-- started and count the attempt. SKIP LOCKED: concurrent workers each get a
-- different task, and none waits for another.
WITH next AS (
    SELECT t.task_id
      FROM jobmachine.task t
     WHERE t.status = 0
       AND t.class_id IN (SELECT class_id FROM jobmachine.class WHERE name = ANY(%(queues)s))
       AND (t.run_after IS NULL OR t.run_after <= coalesce(%(now)s, now()))
     ORDER BY t.task_id
     LIMIT %(limit)s
       FOR UPDATE OF t SKIP LOCKED
)
UPDATE jobmachine.task t
   SET status = 100, modified = coalesce(%(now)s, now()), attempts = t.attempts + 1
  FROM next
 WHERE t.task_id = next.task_id
RETURNING t.task_id, t.parameters, t.attempts, t.created,
          (SELECT name FROM jobmachine.class c WHERE c.class_id = t.class_id) AS queue

-- name: task_finish
-- Store a reply or result and mark the task done, only while this attempt
-- still holds it; notify the client on jmr:<task_id> when asked.
-- Returns no row when the task is no longer held (it was revived).
WITH held AS (
    UPDATE jobmachine.task
       SET status = 200, modified = now()
     WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
    RETURNING task_id
), stored AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id, %(result)s, 'json' FROM held
    RETURNING task_id
)
SELECT task_id,
       CASE WHEN %(notify)s THEN pg_notify('jmr:' || task_id::text, 'reply') END
  FROM stored

-- name: task_done
-- Mark a held task done without a result (process() returned without one).
UPDATE jobmachine.task
   SET status = 200, modified = now()
 WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
RETURNING task_id

-- name: result_insert_error
-- Store an error result of a held task without changing its status.
INSERT INTO jobmachine.result (task_id, result, resulttype)
SELECT task_id, %(result)s, 'error'
  FROM jobmachine.task
 WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
RETURNING task_id

-- name: task_fail_attempt
-- process() raised: store the error, then put the task back to waiting, or
-- fail it (900) when it has used all its attempts. Failing notifies the
-- client, which is waiting for an answer that will not come.
WITH held AS (
    UPDATE jobmachine.task
       SET status = CASE WHEN attempts > %(retries)s THEN 900 ELSE 0 END,
           modified = now()
     WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
    RETURNING task_id, status
), stored AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id, %(result)s, 'error' FROM held
    RETURNING task_id
)
SELECT held.task_id, held.status,
       CASE WHEN held.status = 900 THEN pg_notify('jmr:' || held.task_id::text, 'failed') END
  FROM held JOIN stored USING (task_id)

-- name: task_answer
-- What a client needs to answer check()/receive(): the status, the newest
-- reply (any result that is not an error) and the newest error.
SELECT t.status,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
         ORDER BY r.result_id DESC LIMIT 1) AS reply,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype = 'error'
         ORDER BY r.result_id DESC LIMIT 1) AS error
  FROM jobmachine.task t
 WHERE t.task_id = %(task_id)s

-- name: task_answered
-- check(): has the task got a reply, or has it finished (done or failed)?
-- NULL (no row) when there is no such task.
SELECT t.status IN (200, 900)
       OR EXISTS (SELECT 1 FROM jobmachine.result r
                   WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error') AS answered
  FROM jobmachine.task t
 WHERE t.task_id = %(task_id)s

-- name: task_revive
-- Housekeeping: started tasks untouched for max_runtime seconds go back to
-- waiting, or to failed when they have used all their attempts (and then
-- the waiting client is told, as when process() fails).
WITH revived AS (
    UPDATE jobmachine.task
       SET status = CASE WHEN attempts > %(retries)s THEN 900 ELSE 0 END,
           modified = coalesce(%(now)s, now())
     WHERE status = 100
       AND modified < coalesce(%(now)s, now()) - make_interval(secs => %(max_runtime)s)
    RETURNING task_id, status
)
SELECT task_id, status,
       CASE WHEN status = 900 THEN pg_notify('jmr:' || task_id::text, 'failed') END
  FROM revived

-- name: task_remove_old
-- Housekeeping: delete finished (done or failed) tasks whose remove_after has
-- passed, or that were not modified for remove_after_days; their results go
-- with them (ON DELETE CASCADE). Bounded, so no long lock.
DELETE FROM jobmachine.task
 WHERE task_id IN (
    SELECT task_id FROM jobmachine.task
     WHERE status IN (200, 900)
       AND coalesce(remove_after,
                    modified + %(remove_after_days)s * interval '1 day')
           < coalesce(%(now)s, now())
     LIMIT %(limit)s)
RETURNING task_id

-- name: chore_lock
-- One housekeeper at a time across the fleet: a transaction-level advisory
-- lock, taken in the same transaction as the chores.
SELECT pg_try_advisory_xact_lock(%(key)s) AS got

-- name: schema_version
-- The newest installed schema version; fails with undefined_table when the
-- schema is not installed.
SELECT max(version) AS version FROM jobmachine.schema_version
