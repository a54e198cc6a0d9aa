-- Every statement job_machine runs at run time, one named block each.
-- Loaded by job_machine/_queries.py; the Store (job_machine/_async/store*.py)
-- is the only code that executes them. Each state change is one statement,
-- so one round trip and atomic even in autocommit.
-- Parameters are %(name)s placeholders; times compare with
-- coalesce(%(now)s, now()) so tests can move the clock without sleeping.
-- A `-- part: y` block is SQL that several statements share: their line
-- `-- include: y` stands for it (job_machine/_queries.py).

-- name: task_insert
-- Insert a waiting task into a queue (creating the queue's class row when
-- it is missing, which is announced on channel jmq for workers subscribed
-- to a branch of queues) and notify the queue's channel. The common case:
-- no parents, no unique key (task_insert_full does those, at the cost of
-- an ON CONFLICT insert). The class row is found and locked by
-- jobmachine.queue_find(), so housekeeping cannot remove the queue under
-- the insert (a removal in progress is waited for, and the row created
-- again). Returns no row when a concurrent sender created the class at the
-- same moment: run it again.
WITH found AS (
    SELECT f.class_id FROM jobmachine.queue_find(%(queue)s) AS f (class_id)
     WHERE f.class_id IS NOT NULL
), created AS (
    INSERT INTO jobmachine.class (name)
    SELECT %(queue)s WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (name) DO NOTHING
    RETURNING class_id
), cls AS (
    SELECT class_id FROM found UNION ALL SELECT class_id FROM created LIMIT 1
), task AS (
    INSERT INTO jobmachine.task (class_id, parameters, status, priority, run_after, max_attempts,
                                 title, grouping, remove_after, keep_for, trace_context,
                                 time_limit, expires_at)
    SELECT cls.class_id, %(parameters)s, 0, %(priority)s::int,
           coalesce(%(run_after)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(max_attempts)s::int, %(title)s::text, %(grouping)s::text, %(remove_after)s::timestamptz,
           make_interval(secs => %(keep_for)s::float8), %(trace_context)s::text,
           make_interval(secs => %(time_limit)s::float8),
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expire_after)s::float8))
      FROM cls
    RETURNING task_id
)
SELECT task_id, pg_notify(%(channel)s, task_id::text),
       (SELECT count(pg_notify('jmq', %(queue)s)) FROM created) AS new_queue
  FROM task

-- name: task_insert_full
-- task_insert with parents or a unique key. With parents, the task
-- is blocked (10) until they are all done, and failed at once when one of
-- them has failed; each parent is locked and marked as having children
-- (by jobmachine.task_mark_parents(), which runs as the schema's owner: a
-- sender holds no UPDATE on task).
-- With a unique key, nothing is inserted while a task of the same queue and
-- key is waiting, blocked or running. A task failed at once gets its
-- ParentFailed error from the trigger task_parent_failed (it runs as the
-- schema's owner: a sender may not insert results). Returns one row: no class (a
-- concurrent sender created it at the same moment: run it again), the
-- parents found, and the new task's id and status (NULL: a unique key
-- conflict, or a parent is missing).
WITH found AS (
    SELECT f.class_id FROM jobmachine.queue_find(%(queue)s) AS f (class_id)
     WHERE f.class_id IS NOT NULL
), created AS (
    INSERT INTO jobmachine.class (name)
    SELECT %(queue)s WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (name) DO NOTHING
    RETURNING class_id
), cls AS (
    SELECT class_id FROM found UNION ALL SELECT class_id FROM created LIMIT 1
), parent AS (
    SELECT m.task_id, m.status FROM jobmachine.task_mark_parents(%(parents)s::bigint[]) m
), verdict AS (
    SELECT array_agg(task_id) AS found,
           min(task_id) FILTER (WHERE status = 900) AS failed_parent,
           count(*) FILTER (WHERE status <> 200) AS pending
      FROM parent
), task AS (
    INSERT INTO jobmachine.task (class_id, parameters, status, priority, run_after, max_attempts,
                                 title, grouping, remove_after, keep_for, unique_key, parents,
                                 trace_context, time_limit, expires_at)
    SELECT cls.class_id, %(parameters)s,
           CASE WHEN v.failed_parent IS NOT NULL THEN 900 WHEN v.pending > 0 THEN 10 ELSE 0 END,
           %(priority)s::int,
           coalesce(%(run_after)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(max_attempts)s::int, %(title)s::text, %(grouping)s::text, %(remove_after)s::timestamptz,
           make_interval(secs => %(keep_for)s::float8), %(unique_key)s::text,
           %(parents)s::bigint[], %(trace_context)s::text,
           make_interval(secs => %(time_limit)s::float8),
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expire_after)s::float8))
      FROM cls, verdict v
     WHERE coalesce(cardinality(v.found), 0) = coalesce(cardinality(%(parents)s::bigint[]), 0)
    ON CONFLICT (class_id, unique_key)
       WHERE unique_key IS NOT NULL AND status IN (0, 10, 100) DO NOTHING
    RETURNING task_id, status
)
SELECT EXISTS (SELECT 1 FROM cls) AS has_class, v.found AS parents_found,
       task.task_id, task.status,
       CASE WHEN task.status = 0 THEN pg_notify(%(channel)s, task.task_id::text) END AS notified,
       (SELECT count(pg_notify('jmq', %(queue)s)) FROM created) AS new_queue
  FROM verdict v LEFT JOIN task ON true

-- name: task_unique_holder
-- The task of a queue that holds a unique key (waiting, blocked or running).
SELECT t.task_id
  FROM jobmachine.task t JOIN jobmachine.class c ON c.class_id = t.class_id
 WHERE c.name = %(queue)s AND t.unique_key = %(unique_key)s AND t.status IN (0, 10, 100)

-- name: task_insert_many
-- Insert many waiting tasks into one queue in one statement (creating the
-- queue's class row when it is missing), in the order given, with the same
-- options, and notify the queue's channel once: a worker woken once drains
-- them all. Each task's trace context is its item of trace_contexts (the
-- send group's, one per task), else trace_context. Returns no row when a
-- concurrent sender created the class at the same moment.
WITH found AS (
    SELECT f.class_id FROM jobmachine.queue_find(%(queue)s) AS f (class_id)
     WHERE f.class_id IS NOT NULL
), created AS (
    INSERT INTO jobmachine.class (name)
    SELECT %(queue)s WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (name) DO NOTHING
    RETURNING class_id
), cls AS (
    SELECT class_id FROM found UNION ALL SELECT class_id FROM created LIMIT 1
), task AS (
    INSERT INTO jobmachine.task (class_id, parameters, status, priority, run_after, max_attempts,
                                 title, grouping, remove_after, keep_for, trace_context,
                                 time_limit, expires_at)
    SELECT cls.class_id, u.p, 0, %(priority)s::int,
           coalesce(%(run_after)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(max_attempts)s::int, %(title)s::text, %(grouping)s::text, %(remove_after)s::timestamptz,
           make_interval(secs => %(keep_for)s::float8),
           coalesce((%(trace_contexts)s::text[])[u.n], %(trace_context)s::text),
           make_interval(secs => %(time_limit)s::float8),
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expire_after)s::float8))
      FROM cls, unnest(%(parameters)b::text[]) WITH ORDINALITY AS u (p, n)
     ORDER BY u.n
    RETURNING task_id
), batch AS (
    SELECT array_agg(task_id ORDER BY task_id) AS ids, count(*) AS n FROM task
)
SELECT ids, pg_notify(%(channel)s, n::text),
       (SELECT count(pg_notify('jmq', %(queue)s)) FROM created) AS new_queue
  FROM batch WHERE n > 0

-- part: claim_ready
-- The claims (task_claim, task_claim_limited): the conditions under which
-- a task of a queue (t) is claimable now: waiting, at or above
-- %(min_priority)s, due, the one asked for if %(task_id)s is given.
AND t.status = 0
AND t.priority >= %(min_priority)s
AND (t.run_after IS NULL OR t.run_after <= coalesce(%(now)s, now()))
AND (t.retry_at IS NULL OR t.retry_at <= coalesce(%(now)s, now()))
AND (%(task_id)s::bigint IS NULL OR t.task_id = %(task_id)s::bigint)
-- Deadlines (version 9): an expired task never runs; the
-- housekeeper fails it (task_expire).
AND (t.expires_at IS NULL OR t.expires_at > coalesce(%(now)s, now()))

-- part: claim_set
-- The claims: a claimed task (t) is started by this worker (NULL outside
-- receive()), its attempt counted.
SET status = 100, modified = coalesce(%(now)s, now()), started = coalesce(%(now)s, now()),
    attempts = t.attempts + 1, worker_id = %(worker_id)s,
    -- The claiming worker's policy, stamped on the task so that the
    -- fleet's housekeeper, whoever it is, judges the task by it (schema
    -- version 8): its attempts and retention where the sender gave none,
    -- this attempt's time limits always (NULL: none given, the
    -- housekeeper's own apply).
    max_attempts = coalesce(t.max_attempts, %(max_attempts)s::int),
    keep_for = coalesce(t.keep_for, make_interval(secs => %(keep_for)s::float8)),
    max_runtime = %(max_runtime)s::float8, orphan_after = %(orphan_after)s::float8

-- part: claim_returning
-- The claims: what a worker needs of a claimed task (t; its queue from next).
RETURNING t.task_id, t.parameters, t.attempts, t.created, next.queue, t.priority,
          t.max_attempts, t.title, t.grouping, t.trace_context,
          greatest(t.created, t.run_after, t.retry_at) AS due,
          -- Deadlines (version 9): the attempt's own time limit, seconds.
          extract(epoch FROM t.time_limit)::float8 AS time_limit

-- name: task_claim
-- Take the best waiting, due tasks of any of the given queues (highest
-- priority, then oldest; none below %(min_priority)s; none of a paused
-- queue), mark them started by this worker (NULL outside receive()) and
-- count the attempt. Per queue, the head of task_ready_idx (class_id,
-- priority DESC, task_id) is read in index order (LATERAL), so a claim costs
-- O(log n) however many tasks wait; the heads of several queues are then
-- merged. SKIP LOCKED: concurrent workers each get different tasks, and
-- none waits for another. %(task_id)s (work_once(task_id=)): that task
-- only, if it is one of these. A queue with fleet-wide limits is left to
-- task_claim_limited (the Store runs it when queue_limited says one of the
-- queues has limits): here it costs one probe of queue_limit's key.
WITH next AS (
    SELECT head.task_id, head.priority, c.name AS queue
      FROM jobmachine.class c
     CROSS JOIN LATERAL (
        SELECT t.task_id, t.priority
          FROM jobmachine.task t
         WHERE t.class_id = c.class_id
           -- include: claim_ready
         ORDER BY t.priority DESC, t.task_id
         LIMIT %(limit)s
           FOR UPDATE OF t SKIP LOCKED
     ) head
     WHERE c.name = ANY(%(queues)s) AND NOT c.paused
       -- fleet-wide limits: not a queue that has limits (task_claim_limited)
       AND NOT EXISTS (SELECT 1 FROM jobmachine.queue_limit l WHERE l.queue = c.name)
     ORDER BY head.priority DESC, head.task_id
     LIMIT %(limit)s
)
UPDATE jobmachine.task t
   -- include: claim_set
  FROM next
 WHERE t.task_id = next.task_id
-- include: claim_returning

-- name: task_claim_limited
-- task_claim, for queues of which some have fleet-wide limits
-- (docs/limits.md): the same tasks in the same order (the parts
-- claim_ready, claim_set and claim_returning keep the two in step), but of a queue with limits no more than its room, counted under
-- a lock of its limit row (queue_limit_room()), and each claim a rate
-- counts recorded in queue_limit_start in the same statement. Every row
-- carries `limited`: whether any of the queues still has limits (a row of
-- NULLs with it when none was claimed), so the Store knows when to go back
-- to task_claim.
WITH
-- ---- fleet-wide limits (docs/limits.md): the room left ----------------
-- Only when one of the queues has a limit (a one-time filter: otherwise
-- queue_limit_room() is not called). It locks the limit rows until this statement
-- commits, so the limited claims of a queue run one at a time, each
-- counting what the one before committed.
room AS MATERIALIZED (
    SELECT r.* FROM jobmachine.queue_limit_room(%(queues)s::text[], %(now)s::timestamptz) r
     WHERE EXISTS (SELECT 1 FROM jobmachine.queue_limit l WHERE l.queue = ANY(%(queues)s::text[]))
),
-- ---- end of fleet-wide limits -------------------------------------------
next AS (
    SELECT head.task_id, head.priority, c.name AS queue, head.grouping
      FROM jobmachine.class c
     CROSS JOIN LATERAL (
        SELECT t.task_id, t.priority, t.grouping
          FROM jobmachine.task t
         WHERE t.class_id = c.class_id
           -- include: claim_ready
           -- limits: none of a grouping whose room is used up
           AND NOT EXISTS (SELECT 1 FROM room r
                            WHERE r.queue = c.name AND r.listed AND r.room = 0
                              AND r.grp IS NOT DISTINCT FROM t.grouping)
         ORDER BY t.priority DESC, t.task_id
         -- limits: no more than the room of a queue limited as a whole
         LIMIT least(%(limit)s, (SELECT r.room FROM room r
                                  WHERE r.queue = c.name AND NOT r.per_grouping))
           FOR UPDATE OF t SKIP LOCKED
     ) head
     WHERE c.name = ANY(%(queues)s) AND NOT c.paused
     ORDER BY head.priority DESC, head.task_id
     LIMIT %(limit)s
),
-- ---- fleet-wide limits: no grouping over its room ------------------------
fits AS (
    SELECT n.task_id, n.queue
      FROM (SELECT next.*, row_number() OVER (PARTITION BY next.queue, next.grouping
                                              ORDER BY next.priority DESC, next.task_id) AS nth
              FROM next) n
     WHERE n.nth <= coalesce(
               (SELECT r.room FROM room r WHERE r.queue = n.queue AND r.per_grouping
                   AND r.listed AND r.grp IS NOT DISTINCT FROM n.grouping),
               (SELECT r.room FROM room r WHERE r.queue = n.queue AND r.per_grouping
                   AND NOT r.listed),
               n.nth)
),
-- ---- end of fleet-wide limits -------------------------------------------
claimed AS (
    UPDATE jobmachine.task t
       -- include: claim_set
      FROM fits next
     WHERE t.task_id = next.task_id
    -- include: claim_returning
),
-- ---- fleet-wide limits: the claims a rate counts -----------------------
counted AS (
    INSERT INTO jobmachine.queue_limit_start (queue, grouping, started, n)
    SELECT c.queue, CASE WHEN r.per_grouping THEN c.grouping END, r.at, count(*)
      FROM claimed c
      JOIN room r ON r.queue = c.queue AND NOT r.listed AND r.rated
     GROUP BY 1, 2, 3
)
-- ---- end of fleet-wide limits -------------------------------------------
SELECT c.*, lim.limited
  FROM (SELECT EXISTS (SELECT 1 FROM jobmachine.queue_limit l
                        WHERE l.queue = ANY(%(queues)s::text[])) AS limited) lim
  LEFT JOIN claimed c ON true
 ORDER BY c.priority DESC, c.task_id

-- name: queue_limited
-- Whether any of these queues has fleet-wide limits (the Store then claims
-- with task_claim_limited).
SELECT EXISTS (SELECT 1 FROM jobmachine.queue_limit l WHERE l.queue = ANY(%(queues)s::text[]))
       AS limited

-- name: task_begin
-- A task claimed ahead is about to run after waiting in the worker's
-- buffer: while this attempt still holds it, start its clock again, so
-- max_runtime counts from process(). No row: it was given up or revived
-- while it waited, and must not run. (started only: the status trigger
-- does not fire.)
UPDATE jobmachine.task
   SET started = now()
 WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
RETURNING task_id

-- name: task_finish
-- Store a reply or result and mark the task done, only while this attempt
-- still holds it, and notify jmr:<task_id> ('reply', or 'result' for
-- result(): a waiting client is answered either way).
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
       pg_notify('jmr:' || task_id::text, CASE WHEN %(notify)s THEN 'reply' ELSE 'result' END)
  FROM stored

-- name: task_done
-- Mark a held task done without a result (process() returned without one),
-- and tell a waiting client on jmr:<task_id>.
UPDATE jobmachine.task
   SET status = 200, modified = now()
 WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
RETURNING task_id, pg_notify('jmr:' || task_id::text, 'done')

-- name: task_done_many
-- Mark several held tasks done without a result, in one statement: the
-- tasks of one prefetched batch whose process() returned without answering.
-- Returns the ids marked; a task missing was revived while it ran.
UPDATE jobmachine.task t
   SET status = 200, modified = now()
  FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[]) AS d (task_id, attempt)
 WHERE t.task_id = d.task_id AND t.status = 100 AND t.attempts = d.attempt
RETURNING t.task_id, pg_notify('jmr:' || t.task_id::text, 'done')

-- name: task_complete_many
-- Store how several held tasks ended, in one statement and one commit (the
-- worker's completer groups the ends of consecutive tasks). Each row is
-- fenced by its claiming attempt. A reply, result or plain return marks
-- the task done (its answer stored, if any); an error ('error') stores the
-- error and puts the task back to waiting, due after its delay (in
-- retry_at, as task_fail_attempt does), or fails it when it has used all
-- its attempts. Every task done or failed notifies jmr:<task_id> with its
-- kind ('failed' for a failure). Returns the tasks
-- written with their new status; a task missing was revived while it ran.
WITH d AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(kinds)s::text[],
                         %(results)s::text[], %(delays)s::float8[])
             AS d (task_id, attempt, kind, result, delay)
), held AS (
    UPDATE jobmachine.task t
       SET status = CASE WHEN d.kind <> 'error' THEN 200
                         WHEN t.attempts - t.uncounted_attempts
                              >= coalesce(t.max_attempts, %(retries)s + 1) THEN 900
                         ELSE 0 END,
           run_after = CASE WHEN d.kind <> 'error' THEN t.run_after END,
           retry_at = CASE WHEN d.kind <> 'error' THEN t.retry_at
                           WHEN t.attempts - t.uncounted_attempts
                                >= coalesce(t.max_attempts, %(retries)s + 1) THEN NULL
                           ELSE now() + make_interval(secs => d.delay) END,
           modified = now()
      FROM d
     WHERE t.task_id = d.task_id AND t.status = 100 AND t.attempts = d.attempt
    RETURNING t.task_id, t.status, d.kind, d.result
), stored AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id, result, CASE WHEN kind = 'error' THEN 'error' ELSE 'json' END
      FROM held
     WHERE result IS NOT NULL
)
SELECT task_id, status,
       CASE WHEN kind <> 'error' THEN pg_notify('jmr:' || task_id::text, kind)
            WHEN status = 900 THEN pg_notify('jmr:' || task_id::text, 'failed') END
  FROM held

-- name: result_insert_error
-- Store an error result of a held task without changing its status.
INSERT INTO jobmachine.result (task_id, result, resulttype)
SELECT task_id, %(result)s, 'error'
  FROM jobmachine.task
 WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
RETURNING task_id

-- name: task_fail_attempt
-- process() raised: store the error, then put the task back to waiting,
-- due again after %(delay)s seconds (the retry backoff, in retry_at: never
-- run_after, which Perl 0.19's claim misreads; the delay it was sent with
-- is served), or fail it (900) when it has used all its attempts. Failing
-- notifies the client, which is waiting for an answer that will not come.
-- (Back to waiting, the trigger task_transition clears worker_id and started.)
WITH held AS (
    UPDATE jobmachine.task
       SET status = CASE WHEN attempts - uncounted_attempts >= coalesce(max_attempts, %(retries)s + 1) THEN 900 ELSE 0 END,
           run_after = NULL,
           retry_at = CASE WHEN attempts - uncounted_attempts >= coalesce(max_attempts, %(retries)s + 1) THEN NULL
                           ELSE now() + make_interval(secs => %(delay)s) END,
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

-- name: task_fail_now
-- A task that no retry can help (a task function's worker rejected its
-- data): store the error and fail it at once, whatever attempts are left;
-- notify the waiting client.
WITH held AS (
    UPDATE jobmachine.task
       SET status = 900, run_after = NULL, modified = now()
     WHERE task_id = %(task_id)s AND status = 100 AND attempts = %(attempt)s
    RETURNING task_id, status
), stored AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id, %(result)s, 'error' FROM held
    RETURNING task_id
)
SELECT held.task_id, pg_notify('jmr:' || held.task_id::text, 'failed')
  FROM held JOIN stored USING (task_id)

-- name: task_answer
-- What a client needs to answer check()/receive(): the status, the newest
-- reply (any result that is not an error) and the newest error. A task
-- sent again (admin_retry, or a claim given back uncounted) counts only the
-- replies of its current run: those stored since its current attempt
-- started (none while it waits); the earlier ones stay for the record.
SELECT t.status,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
           AND (t.uncounted_attempts = 0 OR r.created >= t.started)
         ORDER BY r.result_id DESC LIMIT 1) AS reply,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype = 'error'
         ORDER BY r.result_id DESC LIMIT 1) AS error
  FROM jobmachine.task t
 WHERE t.task_id = %(task_id)s

-- name: task_answers
-- task_answer for several tasks at once (a client waiting on many); a task
-- missing from the result does not exist.
SELECT t.task_id, t.status,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
           AND (t.uncounted_attempts = 0 OR r.created >= t.started)
         ORDER BY r.result_id DESC LIMIT 1) AS reply,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype = 'error'
         ORDER BY r.result_id DESC LIMIT 1) AS error
  FROM jobmachine.task t
 WHERE t.task_id = ANY(%(task_ids)s::bigint[])

-- name: task_answered
-- check(): has the task got a reply (of its current run: see task_answer),
-- or has it finished (done or failed)?
-- NULL (no row) when there is no such task.
SELECT t.status IN (200, 900)
       OR EXISTS (SELECT 1 FROM jobmachine.result r
                   WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
                     AND (t.uncounted_attempts = 0 OR r.created >= t.started)) AS answered
  FROM jobmachine.task t
 WHERE t.task_id = %(task_id)s

-- name: task_revive
-- Housekeeping: started tasks that no job_machine worker holds (claimed by
-- a Perl worker, or by work_once() outside receive()) and that were
-- untouched for their own orphan_after seconds (the claiming worker's),
-- else for %(orphan_after)s (a Perl worker's claim) go back to waiting, or to
-- failed when they have used all their attempts (their own max_attempts,
-- else %(retries)s + 1), and then the waiting
-- client is told, as when process() fails. A live worker's tasks are
-- never revived here: see worker_reap and task_give_up.
WITH revived AS (
    UPDATE jobmachine.task t
       SET status = CASE WHEN t.attempts - t.uncounted_attempts >= coalesce(t.max_attempts, %(retries)s + 1) THEN 900 ELSE 0 END,
           modified = coalesce(%(now)s, now())
     WHERE t.status = 100
       AND t.modified < coalesce(%(now)s, now())
                        - make_interval(secs => coalesce(t.orphan_after, %(orphan_after)s))
       AND t.worker_id IS NULL
    RETURNING t.task_id, t.status, t.class_id
)
SELECT task_id, status,
       CASE WHEN status = 900 THEN pg_notify('jmr:' || task_id::text, 'failed')
            ELSE pg_notify(jobmachine.queue_channel((SELECT name FROM jobmachine.class c
                                      WHERE c.class_id = revived.class_id)), task_id::text)
       END
  FROM revived

-- name: task_give_up
-- Housekeeping: a live worker's task started longer ago than its own
-- max_runtime (the claiming worker's; 'Infinity': none), else than
-- %(max_runtime)s seconds (claimed by an older job_machine; NULL: never),
-- is given up on, as if the attempt had raised: an error is stored, and
-- the task waits again (the worker still running it can no longer finish
-- it) or fails. Reads the started tasks only (task_started_worker_idx).
WITH given_up AS (
    UPDATE jobmachine.task t
       SET status = CASE WHEN t.attempts - t.uncounted_attempts >= coalesce(t.max_attempts, %(retries)s + 1) THEN 900 ELSE 0 END,
           modified = coalesce(%(now)s, now())
     WHERE t.status = 100 AND t.worker_id IS NOT NULL
       AND extract(epoch FROM coalesce(%(now)s, now()) - t.started)
           > coalesce(t.max_runtime, %(max_runtime)s::float8)
    RETURNING t.task_id, t.status, t.attempts, t.class_id,
              coalesce(t.max_runtime, %(max_runtime)s::float8) AS max_runtime
), noted AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id,
           json_build_object('type', 'MaxRuntimeExceeded',
                             'message', 'attempt ' || attempts || ' ran longer than max_runtime ('
                                        || max_runtime || ' s)',
                             'attempt', attempts)::text,
           'error'
      FROM given_up
)
SELECT task_id, status,
       CASE WHEN status = 900 THEN pg_notify('jmr:' || task_id::text, 'failed')
            ELSE pg_notify(jobmachine.queue_channel((SELECT name FROM jobmachine.class c
                                      WHERE c.class_id = given_up.class_id)), task_id::text)
       END
  FROM given_up

-- name: task_expire
-- Housekeeping, every round: waiting or blocked tasks whose expires_at has
-- passed never started and never will (the claim skips them): they fail
-- with a TaskExpired error, their waiting clients are told, and their
-- blocked children fail in turn. Up to %(limit)s a round, oldest deadline
-- first (task_expiring_idx).
WITH due AS (
    SELECT task_id FROM jobmachine.task
     WHERE expires_at IS NOT NULL AND status IN (0, 10)
       AND expires_at <= coalesce(%(now)s, now())
     ORDER BY expires_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE jobmachine.task t SET status = 900, modified = coalesce(%(now)s, now())
      FROM due
     WHERE t.task_id = due.task_id AND t.status IN (0, 10)
    RETURNING t.task_id, t.expires_at
), noted AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id,
           json_build_object('type', 'TaskExpired',
                             'message', 'not started before it expired at ' || expires_at)::text,
           'error'
      FROM expired
)
SELECT task_id, 900 AS status, pg_notify('jmr:' || task_id::text, 'failed') FROM expired

-- name: task_cancelled_held
-- A worker's heartbeat, while process() runs: which of the attempts it runs
-- (task ids and their attempt numbers) were cancelled (Admin.cancel), so
-- that the worker stops them: the fallback of the jmw:<worker_id>
-- notification, which may be lost. An attempt given up or revived is not
-- stopped (its answer is refused when it comes, as ever).
SELECT t.task_id, h.attempt
  FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[]) AS h (task_id, attempt)
  JOIN jobmachine.task t ON t.task_id = h.task_id
 WHERE t.cancelled_at IS NOT NULL AND t.status <> 100 AND t.attempts = h.attempt

-- name: task_remove_old
-- Retention: delete one bounded batch of finished (done or failed) tasks,
-- with their results (ON DELETE CASCADE), whose time has come: their own
-- remove_after time, their own keep_for after they finished (the sender's,
-- else the claiming worker's remove_after), or else (a task no job_machine
-- worker claimed: cancelled, failed with its parent, run by Perl or by an
-- older job_machine) %(remove_after_days)s days after they finished. Each
-- branch reads index ranges, so a batch costs the rows it deletes, not the
-- size of the history: task_remove_at_idx by remove_after; task_keep_idx
-- (keep_for, modified) for the rest, its NULL keep_for range, then one
-- range per distinct keep_for, found by a skip scan (a recursive walk of
-- the index from one keep_for to the next: as many probes as there are
-- distinct values); each of those ranges is read oldest first (ORDER BY),
-- so the planner reads the index, not the table, whatever it guesses of
-- how many are due. The delete itself is jobmachine.task_delete_finished()
-- (the schema's owner's: a worker holds no DELETE on task, which would let
-- it LOCK TABLE it).
WITH RECURSIVE keeps (keep_for) AS (
    SELECT min(t.keep_for) FROM jobmachine.task t
     WHERE t.status IN (200, 900) AND t.remove_after IS NULL
    UNION ALL
    SELECT (SELECT min(t.keep_for) FROM jobmachine.task t
             WHERE t.status IN (200, 900) AND t.remove_after IS NULL
               AND t.keep_for > k.keep_for)
      FROM keeps k
     WHERE k.keep_for IS NOT NULL
)
SELECT d.task_id
  FROM jobmachine.task_delete_finished(ARRAY(
    (SELECT task_id FROM jobmachine.task
      WHERE status IN (200, 900) AND remove_after IS NULL AND keep_for IS NULL
        AND modified < coalesce(%(now)s, now()) - %(remove_after_days)s * interval '1 day'
      LIMIT %(limit)s)
    UNION ALL
    (SELECT task_id FROM jobmachine.task
      WHERE status IN (200, 900) AND remove_after IS NOT NULL
        AND remove_after < coalesce(%(now)s, now())
      ORDER BY remove_after
      LIMIT %(limit)s)
    UNION ALL
    (SELECT due.task_id
       FROM keeps k
      CROSS JOIN LATERAL (
        SELECT t.task_id FROM jobmachine.task t
         WHERE t.status IN (200, 900) AND t.remove_after IS NULL AND t.keep_for = k.keep_for
           AND t.modified < coalesce(%(now)s, now()) - k.keep_for
         ORDER BY t.modified
         LIMIT %(limit)s) due
      WHERE k.keep_for IS NOT NULL
      LIMIT %(limit)s))) AS d (task_id)

-- name: chore_lock
-- One housekeeper at a time across the fleet: a transaction-level advisory
-- lock, taken in the same transaction as the chores. The fleet's leader
-- holds the same key at session level (leader_lock), so a manual
-- housekeeping() never runs beside it. Advisory locks are open to every
-- role: a key held by a session whose user may not register a worker (a
-- sender, a reader, anyone but a worker or the schema's owner) is a
-- squatter, not a housekeeper, and does not stop the chores (which are
-- safe beside each other, only wasteful): got is true then, the lock not
-- taken.
SELECT pg_try_advisory_xact_lock(%(key)s)
       OR NOT EXISTS (
           SELECT 1
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid::bigint = %(key)s::bigint >> 32
              AND l.objid::bigint = %(key)s::bigint & 4294967295
              AND has_any_column_privilege(a.usesysid, 'jobmachine.worker', 'INSERT')) AS got

-- name: queue_prune
-- Housekeeping: remove up to %(limit)s queues (class rows) that have no
-- task, are not paused, and were neither created nor paused or resumed in
-- the last %(older_than)s seconds; their names. jobmachine.queue_prune()
-- (the schema's owner's: no role holds DELETE on class) locks them first,
-- skipping those a sender is inserting into, and deletes only those still
-- empty with a fresh snapshot. A send to a removed queue creates it again.
SELECT p.name FROM jobmachine.queue_prune(%(older_than)s::float8, %(limit)s::int,
                                          %(now)s::timestamptz) AS p (name)

-- name: task_unclaim
-- A worker gives back tasks it claimed ahead (a batch claim) but never
-- started: waiting again, the claim not counted against the task's
-- attempts (uncounted_attempts), though its number stays used: the fencing
-- token only grows. The queue is notified.
WITH unclaimed AS (
    UPDATE jobmachine.task t
       SET status = 0, uncounted_attempts = t.uncounted_attempts + 1, modified = now()
     WHERE t.task_id = ANY(%(task_ids)s) AND t.status = 100
       AND t.worker_id = %(worker_id)s
    RETURNING t.task_id, t.class_id
)
SELECT task_id,
       pg_notify(jobmachine.queue_channel((SELECT name FROM jobmachine.class c
                            WHERE c.class_id = unclaimed.class_id)), task_id::text)
  FROM unclaimed

-- name: leader_lock
-- Become the fleet's housekeeper: a session-level advisory lock that the
-- leader keeps until its registry connection ends. Re-entrant for the
-- session that holds it. As in chore_lock, a key held by a session whose
-- user may not register a worker does not count: got is true, the lock
-- not taken (every worker is then a housekeeper, chore_lock serialising
-- them as well as it can, until the squatter lets go).
SELECT pg_try_advisory_lock(%(key)s)
       OR NOT EXISTS (
           SELECT 1
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid::bigint = %(key)s::bigint >> 32
              AND l.objid::bigint = %(key)s::bigint & 4294967295
              AND has_any_column_privilege(a.usesysid, 'jobmachine.worker', 'INSERT')) AS got

-- name: task_next_due
-- After a claim that found nothing: seconds until the next waiting task
-- that the worker may claim (same queues, not paused, priority high enough)
-- becomes due (a retry in backoff, a delayed task); 0 or less when one is
-- due already, which the claim skipped because a transaction held its row
-- lock (a sender adding a child to it, say); NULL when none is pending.
SELECT extract(epoch FROM min(coalesce(greatest(t.run_after, t.retry_at), now())) - now())::float8 AS wait
  FROM jobmachine.task t
 WHERE t.status = 0
   AND t.class_id IN (SELECT class_id FROM jobmachine.class
                       WHERE name = ANY(%(queues)s) AND NOT paused)
   AND t.priority >= %(min_priority)s

-- name: task_info
-- Everything about one task: its state, options, attempts, every error
-- (oldest first), every reply or result (oldest first), its notes, its
-- parents and blocked children, and the worker holding it.
SELECT t.task_id, c.name AS queue, t.status, t.attempts, t.parameters,
       t.created, t.modified, greatest(t.run_after, t.retry_at) AS run_after, t.started, t.worker_id,
       t.priority, t.max_attempts, t.title, t.grouping, t.unique_key, t.notes::text AS notes,
       t.parents, t.remove_after, extract(epoch FROM t.keep_for)::float8 AS keep_for,
       -- Deadlines (version 9).
       extract(epoch FROM t.time_limit)::float8 AS time_limit, t.expires_at, t.cancelled_at,
       w.host AS worker_host, w.pid AS worker_pid,
       ARRAY(SELECT r.result FROM jobmachine.result r
              WHERE r.task_id = t.task_id AND r.resulttype = 'error'
              ORDER BY r.result_id) AS errors,
       ARRAY(SELECT r.result FROM jobmachine.result r
              WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
              ORDER BY r.result_id) AS results,
       ARRAY(SELECT k.task_id FROM jobmachine.task k
              WHERE t.has_children AND k.parents @> ARRAY[t.task_id::bigint]
              ORDER BY k.task_id) AS children
  FROM jobmachine.task t
  LEFT JOIN jobmachine.class c ON c.class_id = t.class_id
  LEFT JOIN jobmachine.worker w ON w.worker_id = t.worker_id
 WHERE t.task_id = %(task_id)s

-- name: task_note
-- Set notes of a task (merged into its notes) and remove others (%(remove)s
-- keys), through jobmachine.task_note() (it runs as the schema's owner:
-- no role holds UPDATE on notes). task_id is NULL when there is no such task.
SELECT jobmachine.task_note(%(task_id)s, %(set)s::jsonb, %(remove)s::text[]) AS task_id

-- name: lock_take
-- Take a named lock (see jobmachine.lock() in create_tables.sql): the
-- lock's id, 0 for a free check (expire <= 0), NULL when all holds are taken.
SELECT jobmachine.lock(%(name)s::text, %(expire)s::float8, %(limit)s::int) AS lock_id

-- name: lock_release
-- Release a named lock: the hold %(lock_id)s, or else the one of the name
-- that expires first (jobmachine.unlock(), the schema's owner's: no role
-- holds DELETE on the lock table). lock_id is NULL when none was held.
SELECT jobmachine.unlock(%(name)s::text, %(lock_id)s::bigint) AS lock_id

-- name: queue_names
-- Every queue name known (for workers subscribed to a branch of queues).
SELECT name FROM jobmachine.class ORDER BY name

-- name: worker_register
-- A worker starts: register it and take its liveness lock, a session-level
-- advisory lock (1785558891, worker_id mod 2^31) that PostgreSQL releases
-- the moment the worker's registry session ends, however it ends. Its
-- dead_after gives it its own reconnect grace in worker_reap.
INSERT INTO jobmachine.worker (host, pid, queues, dead_after)
VALUES (%(host)s, %(pid)s, %(queues)s, %(dead_after)s::float8)
RETURNING worker_id, pg_try_advisory_lock(1785558891, (worker_id %% 2147483648)::int) AS locked

-- name: worker_registered
-- Whether a worker is registered in this database: a worker whose registry
-- session (listen_dsn) and work connection reach different databases is
-- registered in the one and claims in the other.
SELECT EXISTS (SELECT 1 FROM jobmachine.worker WHERE worker_id = %(worker_id)s) AS registered

-- name: worker_heartbeat
-- Every few seconds, from the worker's registry connection: say it is
-- alive (re-creating its row if a rescuer removed it while it was cut off),
-- take its liveness lock again after a reconnect, and touch the modified
-- time of the tasks it holds, so a Perl worker's max_runtime revive never
-- takes them. Returns the worker's lock state and any command for it.
WITH upsert AS (
    INSERT INTO jobmachine.worker (worker_id, host, pid, queues, dead_after)
    VALUES (%(worker_id)s, %(host)s, %(pid)s, %(queues)s, %(dead_after)s::float8)
    ON CONFLICT (worker_id) DO UPDATE SET seen = now()
    RETURNING worker_id, command
), touched AS (
    UPDATE jobmachine.task t
       SET modified = now()
     WHERE t.worker_id = %(worker_id)s AND t.status = 100
       AND t.modified < now() - interval '60 seconds'
    RETURNING t.task_id
)
SELECT pg_try_advisory_lock(1785558891, (worker_id %% 2147483648)::int) AS locked,
       (SELECT count(*) FROM touched) AS touched, command,
       -- Which server life this is: a restart or a promotion (a new
       -- timeline, read from the current WAL file's name) changes it.
       pg_postmaster_start_time()::text || ' timeline '
       || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS server_life
  FROM upsert

-- name: worker_reap
-- Rescue the tasks of dead workers: a worker is dead when no session that
-- may register a worker holds its liveness lock and it has not been seen
-- for its own reconnect grace (half its dead_after; %(grace)s seconds for
-- a worker registered by an older job_machine): time for a live worker to
-- reconnect. Right after the server started, nobody is judged for that
-- grace, since every worker lost its session at once. When more than one
-- worker and more than half of the registered ones look dead at once,
-- that is an outage (a partition, a proxy or failover that cut them off),
-- not deaths: then only those unseen for %(outage_graces)s graces are
-- reaped. A dead worker's tasks are judged by their own attempts
-- (max_attempts, stamped by the claim), else by %(retries)s + 1. The dead workers' rows are removed; each of their started tasks
-- gets an error result and waits again (its queue is notified, so an idle
-- worker takes it at once), or fails when it has used all its attempts.
-- Started tasks of a worker whose row is already gone are rescued the same
-- way once its lock is free. Given %(worker_id)s, reap that worker instead,
-- alive or not: a worker that stops hands back what it still holds.
WITH live AS (
    -- A key held by a session whose user may not register a worker (a
    -- sender squatting on it, say) keeps nobody alive (as chore_lock).
    SELECT l.objid::bigint AS lock_id
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid = 1785558891::oid
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND has_any_column_privilege(a.usesysid, 'jobmachine.worker', 'INSERT')
), looks_dead AS (
    SELECT w.worker_id, w.seen, g.grace
      FROM jobmachine.worker w
     CROSS JOIN LATERAL (SELECT coalesce(w.dead_after / 2, %(grace)s::float8) AS grace) g
     WHERE %(worker_id)s::bigint IS NULL
       AND w.seen < coalesce(%(now)s, now()) - make_interval(secs => g.grace)
       AND pg_postmaster_start_time()
           < coalesce(%(now)s, now()) - make_interval(secs => g.grace)
       AND w.worker_id %% 2147483648 NOT IN (SELECT lock_id FROM live)
), outage AS (
    -- Most of the fleet looking dead at once is an outage; so is any round
    -- the judge still counts as the end of one (%(outage)s): the workers cut
    -- off reconnect one by one, and the last ones must not pass for deaths.
    SELECT (count(*) > 1 AND 2 * count(*) > (SELECT count(*) FROM jobmachine.worker))
           OR %(outage)s::bool AS yes
      FROM looks_dead
), dead AS (
    DELETE FROM jobmachine.worker w
     WHERE CASE WHEN %(worker_id)s::bigint IS NOT NULL THEN w.worker_id = %(worker_id)s::bigint
           ELSE w.worker_id IN (
                SELECT d.worker_id FROM looks_dead d
                 WHERE NOT (SELECT yes FROM outage)
                    OR d.seen < coalesce(%(now)s, now())
                                - make_interval(secs => d.grace * %(outage_graces)s))
           END
    RETURNING w.worker_id, w.host, w.pid
), unregistered AS (
    SELECT t.task_id
      FROM jobmachine.task t
     WHERE %(worker_id)s::bigint IS NULL
       AND t.status = 100 AND t.worker_id IS NOT NULL
       AND t.modified < coalesce(%(now)s, now()) - make_interval(secs => %(grace)s)
       AND NOT EXISTS (SELECT 1 FROM jobmachine.worker w WHERE w.worker_id = t.worker_id)
       AND t.worker_id %% 2147483648 NOT IN (SELECT lock_id FROM live)
), held AS (
    -- Locked first, so the worker that held each task is known after the
    -- update (task_transition clears worker_id when a task waits again).
    SELECT t.task_id, t.worker_id
      FROM jobmachine.task t
     WHERE t.status = 100
       AND (t.worker_id IN (SELECT worker_id FROM dead)
            OR t.task_id IN (SELECT task_id FROM unregistered))
       FOR UPDATE
), revived AS (
    UPDATE jobmachine.task t
       SET status = CASE WHEN t.attempts - t.uncounted_attempts >= coalesce(t.max_attempts, %(retries)s + 1) THEN 900 ELSE 0 END,
           modified = coalesce(%(now)s, now())
      FROM held
     WHERE t.task_id = held.task_id
    RETURNING t.task_id, t.status, t.attempts, t.class_id, held.worker_id
), noted AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT r.task_id,
           json_build_object('type', CASE WHEN %(worker_id)s::bigint IS NULL
                                          THEN 'WorkerDied' ELSE 'WorkerStopped' END,
                             'message', 'worker ' || r.worker_id
                                        || coalesce(' on ' || d.host || ' (pid ' || d.pid || ')', '')
                                        || ' ended during attempt ' || r.attempts,
                             'attempt', r.attempts)::text,
           'error'
      FROM revived r LEFT JOIN dead d USING (worker_id)
)
SELECT r.worker_id, r.task_id, r.status,
       CASE WHEN r.status = 900 THEN pg_notify('jmr:' || r.task_id::text, 'failed')
            ELSE pg_notify(jobmachine.queue_channel((SELECT name FROM jobmachine.class c
                                      WHERE c.class_id = r.class_id)), r.task_id::text)
       END,
       false AS outage
  FROM revived r
 UNION ALL
SELECT d.worker_id, NULL, NULL, NULL, false
  FROM dead d
 UNION ALL
-- The verdict, when it is an outage (more than one worker looking dead).
SELECT NULL, NULL, NULL, NULL, true
 WHERE (SELECT yes FROM outage) AND (SELECT count(*) FROM looks_dead) > 1

-- name: task_release_held
-- A worker that lost its connection hands back the started tasks it holds
-- but is not processing (those in %(keep)s it is): a claim that committed
-- while its answer was lost with the connection left the worker unaware
-- of them. They wait again at once, their queue notified. Never run, as
-- tasks given back by task_unclaim: the claim's number stays used (the
-- fencing token only grows) but is not counted against the task's
-- attempts (uncounted_attempts), so lost connections use up no budget.
WITH released AS (
    UPDATE jobmachine.task t
       SET status = 0, uncounted_attempts = t.uncounted_attempts + 1, modified = now()
     WHERE t.worker_id = %(worker_id)s AND t.status = 100
       AND NOT (t.task_id = ANY(%(keep)s))
    RETURNING t.task_id, t.class_id
)
SELECT task_id,
       pg_notify(jobmachine.queue_channel((SELECT name FROM jobmachine.class c
                            WHERE c.class_id = released.class_id)), task_id::text)
  FROM released

-- name: session_set
-- Set a configuration parameter for the rest of the session (the registry
-- session's server-side TCP keepalives).
SELECT set_config(%(name)s, %(value)s, false)

-- name: schema_version
-- The newest installed schema version; fails with undefined_table when the
-- schema is not installed.
SELECT max(version) AS version FROM jobmachine.schema_version

-- name: admin_stats
-- Counts of the tasks of each queue that are not done, by state (delayed:
-- waiting but not due yet), and whether the queue is paused. Reads only
-- the partial indexes of those states (task_ready_idx, task_started_worker_idx,
-- task_parked_idx), never the finished history: cheap enough every second.
SELECT c.name AS queue, c.paused,
       coalesce(n.waiting, 0) AS waiting, coalesce(n.delayed, 0) AS delayed,
       coalesce(n.blocked, 0) AS blocked, coalesce(n.running, 0) AS running,
       coalesce(n.failed, 0) AS failed
  FROM jobmachine.class c
  LEFT JOIN (
    SELECT t.class_id,
           count(*) FILTER (WHERE t.status = 0
                              AND (t.run_after IS NULL OR t.run_after <= now())) AS waiting,
           count(*) FILTER (WHERE t.status = 0 AND t.run_after > now()) AS delayed,
           count(*) FILTER (WHERE t.status = 10) AS blocked,
           count(*) FILTER (WHERE t.status = 100) AS running,
           count(*) FILTER (WHERE t.status = 900) AS failed
      FROM (SELECT class_id, status, greatest(run_after, retry_at) AS run_after
              FROM jobmachine.task WHERE status = 0
            UNION ALL
            SELECT class_id, status, NULL FROM jobmachine.task WHERE status = 100
            UNION ALL
            SELECT class_id, status, NULL FROM jobmachine.task WHERE status IN (10, 900)) t
     GROUP BY t.class_id) n ON n.class_id = c.class_id
 ORDER BY c.name

-- name: admin_oldest_waiting
-- Per queue with tasks due now, how many seconds the longest-waiting of
-- them has waited since it became due (the latest of its creation, its
-- run_after and its retry_at), for the metrics' oldest-waiting age. Reads
-- only the waiting tasks (the partial index task_ready_idx, status = 0),
-- never the finished history.
SELECT c.name AS queue,
       extract(epoch FROM now() - min(greatest(t.created, t.run_after, t.retry_at)))::float8
           AS age
  FROM jobmachine.task t
  JOIN jobmachine.class c ON c.class_id = t.class_id
 WHERE t.status = 0
   AND (t.run_after IS NULL OR t.run_after <= now())
   AND (t.retry_at IS NULL OR t.retry_at <= now())
 GROUP BY c.name
 ORDER BY c.name

-- name: admin_done_estimate
-- The planner's estimate of the task table's rows (-1: never analysed), the
-- cheap base of a done count over a large history.
SELECT reltuples::bigint AS rows FROM pg_class WHERE oid = 'jobmachine.task'::regclass

-- name: admin_done_count
-- The exact number of done tasks (an index-only count; used while the
-- table is small).
SELECT count(*) AS done FROM jobmachine.task WHERE status = 200

-- name: admin_history
-- Done and failed tasks per hour over the last 24 hours (by when they
-- finished), oldest first, hours without any included.
WITH finished AS (
    SELECT date_trunc('hour', t.modified) AS hour,
           count(*) FILTER (WHERE t.status = 200) AS done,
           count(*) FILTER (WHERE t.status = 900) AS failed
      FROM jobmachine.task t
     WHERE t.status IN (200, 900)
       AND t.modified >= date_trunc('hour', now()) - interval '23 hours'
     GROUP BY 1
)
SELECT h.hour, coalesce(f.done, 0) AS done, coalesce(f.failed, 0) AS failed
  FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                       date_trunc('hour', now()), interval '1 hour') AS h (hour)
  LEFT JOIN finished f ON f.hour = h.hour
 ORDER BY h.hour

-- name: admin_list_tasks
-- A page of tasks, newest first, filtered by status, queue and grouping
-- (NULL: any). Pages continue below %(before_id)s (keyset pagination: fast
-- on any page) or skip %(offset)s rows. Run unprepared, so each filter's
-- plan uses the index that fits it (task_ready_idx, task_parked_idx, ...).
SELECT t.task_id, c.name AS queue, t.status, t.attempts, t.created, t.modified,
       greatest(t.run_after, t.retry_at) AS run_after, t.worker_id, t.priority, t.title, t.grouping,
       left(t.parameters, 200) AS parameters
  FROM jobmachine.task t
  LEFT JOIN jobmachine.class c ON c.class_id = t.class_id
 WHERE (%(status)s::int IS NULL OR t.status = %(status)s::int)
   AND (%(queue)s::text IS NULL OR t.class_id = (SELECT class_id FROM jobmachine.class
                                                  WHERE name = %(queue)s::text))
   AND (%(grouping)s::text IS NULL OR t.grouping = %(grouping)s::text)
   AND (%(before_id)s::bigint IS NULL OR t.task_id < %(before_id)s::bigint)
 ORDER BY t.task_id DESC
 OFFSET %(offset)s
 LIMIT %(limit)s

-- name: admin_cancel
-- Cancel a waiting, blocked or running task: it fails (900) at once with a
-- Cancelled error, whatever attempts it has left, and cancelled_at records
-- when; a waiting client is told (and its blocked children fail in turn).
-- A running task's attempt is thereby fenced out (status is no longer
-- 100): whatever its worker writes later is refused. The worker holding it
-- is told on channel jmw:<worker_id> (payload 'cancel:<task_id>:<attempt>') to stop
-- the attempt; its heartbeat finds it too (task_cancelled_held). A task that
-- is finished is left alone. running: whether it was running, and who held it.
WITH old AS (
    SELECT task_id, status, worker_id FROM jobmachine.task
     WHERE task_id = %(task_id)s AND status IN (0, 10, 100)
       FOR UPDATE
), cancelled AS (
    UPDATE jobmachine.task t SET status = 900, modified = now(), cancelled_at = now()
      FROM old
     WHERE t.task_id = old.task_id
    RETURNING t.task_id, old.status = 100 AS running, old.worker_id, t.attempts
), noted AS (
    INSERT INTO jobmachine.result (task_id, result, resulttype)
    SELECT task_id,
           CASE WHEN running THEN '{"type": "Cancelled", "message": "cancelled by hand while running"}'
                ELSE '{"type": "Cancelled", "message": "cancelled by hand"}' END,
           'error'
      FROM cancelled
)
SELECT task_id, running, worker_id, pg_notify('jmr:' || task_id::text, 'failed'),
       CASE WHEN worker_id IS NOT NULL
            THEN pg_notify('jmw:' || worker_id::text,
                           'cancel:' || task_id::text || ':' || attempts::text) END
  FROM cancelled

-- name: admin_retry
-- Send a failed or done task again with a fresh budget of attempts (the
-- earlier ones become uncounted; attempts, the fencing token, goes on
-- growing, so a zombie of an earlier attempt can never answer), due now,
-- optionally to another queue (created if missing) or with another
-- priority: waiting, or blocked while any of its parents is not done. Its
-- earlier results stay, for the record. A waiting, blocked or running task
-- is left alone.
WITH target AS (
    SELECT f.class_id FROM jobmachine.queue_find(%(queue)s::text) AS f (class_id)
     WHERE f.class_id IS NOT NULL
), created AS (
    INSERT INTO jobmachine.class (name)
    SELECT %(queue)s::text WHERE %(queue)s::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM target)
    ON CONFLICT (name) DO NOTHING
    RETURNING class_id
), retried AS (
    UPDATE jobmachine.task t
       SET status = CASE WHEN EXISTS (SELECT 1 FROM jobmachine.task p
                                       WHERE p.task_id = ANY(t.parents) AND p.status <> 200)
                         THEN 10 ELSE 0 END,
           uncounted_attempts = t.attempts, run_after = NULL, retry_at = NULL, modified = now(),
           -- Deadlines (version 9): a fresh start has neither.
           expires_at = NULL, cancelled_at = NULL,
           priority = coalesce(%(priority)s::int, t.priority),
           class_id = coalesce((SELECT class_id FROM target UNION ALL SELECT class_id FROM created
                                LIMIT 1), t.class_id)
     WHERE t.task_id = %(task_id)s AND t.status IN (200, 900)
    RETURNING t.task_id, t.class_id, t.status
)
SELECT task_id, status,
       CASE WHEN status = 0 THEN
           pg_notify(jobmachine.queue_channel(coalesce(%(queue)s::text,
                                       (SELECT name FROM jobmachine.class c
                                         WHERE c.class_id = retried.class_id))),
                     task_id::text) END
  FROM retried

-- name: admin_pause
-- Pause or resume a queue. A resumed queue is notified, so its workers
-- take what waits at once. Returns no row when there is no such queue.
WITH changed AS (
    UPDATE jobmachine.class SET paused = %(paused)s, modified = now()
     WHERE name = %(queue)s
    RETURNING name, paused
)
SELECT name,
       CASE WHEN NOT paused THEN pg_notify(jobmachine.queue_channel(name), 'resumed') END
  FROM changed

-- name: admin_worker_command
-- Leave a command ('stop') for one worker, or for every registered worker
-- when %(worker_id)s is NULL; each reads it with its next heartbeat.
UPDATE jobmachine.worker SET command = %(command)s
 WHERE %(worker_id)s::bigint IS NULL OR worker_id = %(worker_id)s::bigint
RETURNING worker_id

-- name: admin_broadcast
-- Leave a command (Admin.broadcast) for each of the workers named (every
-- registered worker when %(worker_ids)s is NULL), and wake each on its
-- channel jmw:<worker_id>: it takes its commands (worker_commands_take) at
-- once, or with its next heartbeat if the notification is lost. Returns
-- the workers that got it.
WITH left_for AS (
    INSERT INTO jobmachine.worker_command (worker_id, command, args)
    SELECT w.worker_id, %(command)s, %(args)s
      FROM jobmachine.worker w
     WHERE %(worker_ids)s::bigint[] IS NULL OR w.worker_id = ANY(%(worker_ids)s::bigint[])
    RETURNING worker_id
)
SELECT worker_id, pg_notify('jmw:' || worker_id::text, 'command') FROM left_for

-- name: worker_commands_take
-- The commands left for this worker (Admin.broadcast), oldest first, taken:
-- each is read once. Through worker_commands_take(), the schema owner's.
SELECT c.command, c.args FROM jobmachine.worker_commands_take(%(worker_id)s) AS c

-- name: admin_limits_set
-- Set a queue's fleet-wide limits (docs/limits.md), replacing any it had,
-- and wake its workers (a raised limit lets them claim more at once).
-- Waits for a limited claim of the queue in progress (it holds the row).
WITH set AS (
    INSERT INTO jobmachine.queue_limit AS l (queue, concurrency, rate, per, per_grouping)
    VALUES (%(queue)s, %(concurrency)s, %(rate)s, %(per)s, %(per_grouping)s)
    ON CONFLICT (queue) DO UPDATE
       SET concurrency = excluded.concurrency, rate = excluded.rate, per = excluded.per,
           per_grouping = excluded.per_grouping, modified = now()
    RETURNING l.queue
)
SELECT queue, pg_notify(jobmachine.queue_channel(queue), 'limits') FROM set

-- name: admin_limits_clear
-- Remove a queue's limits and the record of its claims that a rate
-- counted (queue_limit_clear(), the schema owner's), and wake its
-- workers. Returns no row when it had none.
SELECT %(queue)s::text AS queue, pg_notify(jobmachine.queue_channel(%(queue)s::text), 'limits')
 WHERE jobmachine.queue_limit_clear(%(queue)s::text)

-- name: admin_limits
-- Every queue's limits, by name, with how many of its tasks are started
-- now (running or claimed ahead) and how many were claimed within the
-- last `per` seconds, when it has a rate.
SELECT l.queue, l.concurrency, l.rate, l.per, l.per_grouping,
       (SELECT count(*) FROM jobmachine.task t
         WHERE t.status = 100
           AND t.class_id = (SELECT c.class_id FROM jobmachine.class c WHERE c.name = l.queue))
           AS running,
       (SELECT coalesce(sum(s.n), 0) FROM jobmachine.queue_limit_start s
         WHERE l.rate IS NOT NULL AND s.queue = l.queue
           AND s.started > now() - make_interval(secs => l.per)) AS recent
  FROM jobmachine.queue_limit l
 ORDER BY l.queue

-- name: admin_remove
-- Delete a task that is not running, with its results; a client waiting on
-- it is told (it then finds no such task). Through jobmachine.task_delete()
-- (the schema's owner's: an admin holds no DELETE on task).
SELECT d.task_id, pg_notify('jmr:' || d.task_id::text, 'removed')
  FROM jobmachine.task_delete(ARRAY[%(task_id)s::bigint]) AS d (task_id)

-- name: admin_reset
-- Delete every task (with its results), named lock and cron schedule, in
-- one transaction (Admin.reset). Through jobmachine.reset(), the schema's
-- owner's: an admin holds no DELETE on any table. (what, removed) rows.
SELECT r.what, r.removed FROM jobmachine.reset() AS r

-- name: admin_purge
-- Delete finished tasks of the given statuses (and queue, and age), in one
-- bounded batch; call again until it returns fewer than %(limit)s. Only
-- done or failed tasks (jobmachine.task_delete_finished(), the schema's
-- owner's: an admin holds no DELETE on task).
SELECT d.task_id
  FROM jobmachine.task_delete_finished(ARRAY(
    SELECT t.task_id FROM jobmachine.task t
      LEFT JOIN jobmachine.class c ON c.class_id = t.class_id
     WHERE t.status = ANY(%(statuses)s)
       AND (%(queue)s::text IS NULL OR c.name = %(queue)s::text)
       AND t.modified < now() - make_interval(secs => %(older_than)s)
     LIMIT %(limit)s)) AS d (task_id)

-- name: admin_workers
-- The registered workers, whether PostgreSQL still holds their liveness
-- lock, and the tasks each is running. On a standby, whose lock table is
-- its own (the primary's advisory locks are not replicated), a worker is
-- alive when its heartbeat, replicated from the primary, is younger than
-- %(seen_within)s seconds.
SELECT w.worker_id, w.host, w.pid, w.queues, w.started, w.seen, w.command,
       CASE WHEN pg_is_in_recovery()
            THEN w.seen > now() - make_interval(secs => %(seen_within)s)
            ELSE EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                  AND l.classid = 1785558891::oid
                  AND l.objid::bigint = w.worker_id %% 2147483648
                  AND l.database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database()))
       END AS alive,
       ARRAY(SELECT t.task_id FROM jobmachine.task t
              WHERE t.worker_id = w.worker_id AND t.status = 100
              ORDER BY t.task_id) AS running
  FROM jobmachine.worker w
 ORDER BY w.worker_id

-- name: server_role
-- Whether this server takes writes: a standby (in recovery) does not, nor
-- does a session whose transactions are read-only by default.
SELECT pg_is_in_recovery() AS standby,
       current_setting('transaction_read_only') = 'on' AS read_only

-- name: admin_search_tasks
-- Tasks whose title contains %(title)s (any case), newest first, within a
-- window: the %(scan)s newest tasks of the status and queue asked (NULL:
-- any) below %(before_id)s, read from the index that fits those filters
-- (task_parked_idx, task_ready_idx, or the primary key backwards). However
-- rare the title among a million tasks, a page reads at most the window.
-- Rows come back as hits, plus the window's last row (n = %(scan)s) when
-- the scan reaches it, so the caller knows where the next window starts.
-- Run unprepared, like admin_list_tasks, so each filter gets its own plan.
SELECT w.task_id, c.name AS queue, w.status, w.attempts, w.created, w.modified,
       w.run_after, w.worker_id, w.priority, w.title, w.grouping, w.parameters,
       w.n, w.hit
  FROM (SELECT t.task_id, t.class_id, t.status, t.attempts, t.created, t.modified,
               greatest(t.run_after, t.retry_at) AS run_after, t.worker_id, t.priority, t.title, t.grouping,
               left(t.parameters, 200) AS parameters,
               coalesce(strpos(lower(t.title), lower(%(title)s::text)) > 0, false) AS hit,
               row_number() OVER (ORDER BY t.task_id DESC) AS n
          FROM jobmachine.task t
         WHERE (%(status)s::int IS NULL OR t.status = %(status)s::int)
           AND (%(queue)s::text IS NULL OR t.class_id = (SELECT class_id FROM jobmachine.class
                                                          WHERE name = %(queue)s::text))
           AND (%(before_id)s::bigint IS NULL OR t.task_id < %(before_id)s::bigint)
         ORDER BY t.task_id DESC
         LIMIT %(scan)s) w
  LEFT JOIN jobmachine.class c ON c.class_id = w.class_id
 WHERE w.hit OR w.n = %(scan)s
 ORDER BY w.task_id DESC
 LIMIT %(limit)s + 1

-- name: admin_locks
-- The named locks (jobmachine.lock): unexpired holds of each name and when
-- they expire, and the expired holds not yet dropped (the next lock() of
-- the name drops them).
SELECT name,
       count(*) FILTER (WHERE expires > now()) AS held,
       min(expires) FILTER (WHERE expires > now()) AS next_expiry,
       max(expires) FILTER (WHERE expires > now()) AS last_expiry,
       count(*) FILTER (WHERE expires <= now()) AS expired
  FROM jobmachine.lock
 GROUP BY name
 ORDER BY name

-- name: admin_task_states
-- The status of each of the tasks %(ids)s that exists (a task's parents and
-- children, for a dashboard).
SELECT task_id, status FROM jobmachine.task WHERE task_id = ANY(%(ids)s::bigint[])

-- ===== cron schedules (schema version 5, docs/schedules.md) ===========

-- name: schedule_upsert
-- Make a schedule, or replace the one of that name: its paused state is
-- kept, and so is its next run unless the cron expression or the zone
-- changed (then the caller's next_run). Returns the row.
INSERT INTO jobmachine.schedule AS s (name, cron, timezone, queue, parameters, priority,
                                      max_attempts, title, grouping, keep_for, next_run)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(queue)s, %(parameters)s, %(priority)s::int,
        %(max_attempts)s::int, %(title)s::text, %(grouping)s::text,
        make_interval(secs => %(keep_for)s::float8), %(next_run)s)
ON CONFLICT (name) DO UPDATE
   SET cron = excluded.cron, timezone = excluded.timezone, queue = excluded.queue,
       parameters = excluded.parameters, priority = excluded.priority,
       max_attempts = excluded.max_attempts, title = excluded.title,
       grouping = excluded.grouping, keep_for = excluded.keep_for,
       next_run = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone)
                       THEN s.next_run ELSE excluded.next_run END,
       modified = now()
 WHERE (s.cron, s.timezone, s.queue, s.parameters, s.priority, s.max_attempts, s.title,
        s.grouping, s.keep_for)
       IS DISTINCT FROM
       (excluded.cron, excluded.timezone, excluded.queue, excluded.parameters,
        excluded.priority, excluded.max_attempts, excluded.title, excluded.grouping,
        excluded.keep_for)
RETURNING s.name

-- name: schedule_delete
-- Remove a schedule; no row when there is none. Tasks it sent stay.
DELETE FROM jobmachine.schedule WHERE name = %(name)s RETURNING name

-- name: schedule_pause
-- Pause a schedule; no row when there is none.
UPDATE jobmachine.schedule SET paused = true, modified = now()
 WHERE name = %(name)s
RETURNING name

-- name: schedule_resume
-- Resume a paused schedule from its next tick after now (the caller's
-- next_run, computed from the cron and zone it read): the ticks that passed
-- while it was paused are skipped. A schedule not paused is left as it is.
-- No row when there is none (or its cron changed meanwhile: read it again).
WITH found AS (
    SELECT schedule_id, paused FROM jobmachine.schedule
     WHERE name = %(name)s AND cron = %(cron)s AND timezone = %(timezone)s
     FOR UPDATE
), resumed AS (
    UPDATE jobmachine.schedule s
       SET paused = false, next_run = %(next_run)s, modified = now()
      FROM found
     WHERE s.schedule_id = found.schedule_id AND found.paused
)
SELECT schedule_id FROM found

-- name: schedule_list
-- Every schedule (or the one named), by name, with the state of the last
-- task it sent (NULL once that task is gone).
SELECT s.name, s.cron, s.timezone, s.queue, s.parameters, s.priority, s.max_attempts,
       s.title, s.grouping, extract(epoch FROM s.keep_for)::float8 AS keep_for, s.paused,
       s.next_run, s.last_run, s.last_task_id, t.status AS last_status, s.created, s.modified
  FROM jobmachine.schedule s
  LEFT JOIN jobmachine.task t ON t.task_id = s.last_task_id
 WHERE %(name)s::text IS NULL OR s.name = %(name)s
 ORDER BY s.name

-- name: schedule_due
-- The dispatcher's round: the schedules whose next tick has come (not
-- paused), oldest tick first, and the database's time, from which the
-- next ticks are computed. Read without a lock: schedule_fire locks each
-- row and checks it is still due before it sends.
SELECT s.schedule_id, s.name, s.cron, s.timezone, s.next_run,
       coalesce(%(now)s::timestamptz, now()) AS now
  FROM jobmachine.schedule s
 WHERE NOT s.paused AND s.next_run <= coalesce(%(now)s::timestamptz, now())
 ORDER BY s.next_run, s.schedule_id
 LIMIT %(limit)s

-- name: schedule_fire
-- Send the task of one tick and advance the schedule, in the caller's
-- transaction: the new task's id; 0 when that tick's task already waits or
-- runs (advanced, nothing sent); NULL when the schedule is no longer due
-- at that tick (another dispatcher sent it, it was paused, changed or removed).
SELECT jobmachine.schedule_fire(%(schedule_id)s, %(tick)s, %(cron)s, %(timezone)s,
                                %(next_run)s, %(now)s::timestamptz) AS task_id

-- name: schedule_now
-- The database's clock, from which a new schedule's first tick is computed.
SELECT now() AS now
-- == streamed partial replies (schema version 6) ============================

-- name: part_insert
-- Store one part of a task (send_part), only while the attempt that sends
-- it still holds the task (a revived attempt's late part is refused: no
-- row), and announce it on jmr:<task_id> with the payload 'part'. FOR
-- SHARE: a revive or rescue committing meanwhile is waited for, and the
-- fence checked again on the task as it left it.
INSERT INTO jobmachine.part (task_id, attempt, seq, data)
SELECT t.task_id, t.attempts, %(seq)s, %(data)s
  FROM jobmachine.task t
 WHERE t.task_id = %(task_id)s AND t.status = 100 AND t.attempts = %(attempt)s
   FOR SHARE
RETURNING task_id, pg_notify('jmr:' || task_id::text, 'part')

-- name: part_read
-- A reader of a task's parts (Client.parts): in one snapshot, whether the
-- task is answered (as task_answer: a reply, or done or failed), its
-- newest error, its current attempt, and up to %(limit)s parts of that
-- attempt in order, from %(seq)s on when the reader is at that attempt
-- (%(attempt)s) already, else from the first. A part is committed before
-- the answer of its attempt, so a read that finds the task answered finds
-- every part it had. No row: there is no such task.
SELECT t.status, t.attempts,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype IS DISTINCT FROM 'error'
           AND (t.uncounted_attempts = 0 OR r.created >= t.started)
         ORDER BY r.result_id DESC LIMIT 1) AS reply,
       (SELECT r.result FROM jobmachine.result r
         WHERE r.task_id = t.task_id AND r.resulttype = 'error'
         ORDER BY r.result_id DESC LIMIT 1) AS error,
       ps.seqs, ps.datas, ps.created
  FROM jobmachine.task t
 CROSS JOIN LATERAL (
    SELECT array_agg(p.seq ORDER BY p.seq) AS seqs, array_agg(p.data ORDER BY p.seq) AS datas,
           array_agg(p.created ORDER BY p.seq) AS created
      FROM (SELECT p.seq, p.data, p.created
              FROM jobmachine.part p
             WHERE p.task_id = t.task_id AND p.attempt = t.attempts
               AND p.seq >= CASE WHEN t.attempts = %(attempt)s THEN %(seq)s ELSE 0 END
             ORDER BY p.seq
             LIMIT %(limit)s) p
 ) ps
 WHERE t.task_id = %(task_id)s

-- name: part_insert_many
-- part_insert for the parts several tasks of one worker send at the same
-- moment (the worker's part group writes them together: one statement, one
-- commit), each fenced by its own attempt; a task's parts in order of seq.
-- Returns the parts stored; one missing was refused (its attempt no longer
-- holds the task). The tasks are locked in order of id. One notification per task (PostgreSQL folds a
-- transaction's equal notifications into one).
WITH d AS (
    SELECT * FROM unnest(%(task_ids)s::bigint[], %(attempts)s::int[], %(seqs)s::int[],
                         %(datas)s::text[]) AS d (task_id, attempt, seq, data)
), held AS (
    SELECT t.task_id, t.attempts
      FROM jobmachine.task t
     WHERE t.task_id IN (SELECT task_id FROM d) AND t.status = 100
     ORDER BY t.task_id
       FOR SHARE
)
INSERT INTO jobmachine.part (task_id, attempt, seq, data)
SELECT d.task_id, d.attempt, d.seq, d.data
  FROM d JOIN held h ON h.task_id = d.task_id AND h.attempts = d.attempt
 ORDER BY d.task_id, d.seq
RETURNING task_id, attempt, seq, pg_notify('jmr:' || task_id::text, 'part')

-- name: admin_task_page
-- One task for the dashboard's task page, every value cut to a bound
-- (%(max_text)s characters of its data and notes, %(max_label)s of a label,
-- %(max_parents)s parents) and %(children)s of its children after the id
-- %(children_after)s, by id: a task holding megabytes or a million
-- children reads a bounded row.
SELECT t.task_id, c.name AS queue, t.status, t.attempts,
       left(t.parameters, %(max_text)s) AS parameters,
       length(t.parameters) AS parameters_length,
       t.created, t.modified, t.run_after, t.started, t.worker_id,
       t.priority, t.max_attempts,
       left(t.title, %(max_label)s) AS title, left(t.grouping, %(max_label)s) AS grouping,
       left(t.unique_key, %(max_label)s) AS unique_key,
       left(t.notes::text, %(max_text)s) AS notes, length(t.notes::text) AS notes_length,
       t.parents[1:%(max_parents)s] AS parents,
       coalesce(cardinality(t.parents), 0) AS parents_count,
       t.remove_after, extract(epoch FROM t.keep_for)::float8 AS keep_for,
       extract(epoch FROM t.time_limit)::float8 AS time_limit, t.expires_at, t.cancelled_at,
       w.host AS worker_host, w.pid AS worker_pid,
       ARRAY(SELECT k.task_id FROM jobmachine.task k
              WHERE t.has_children AND k.parents @> ARRAY[t.task_id::bigint]
                AND k.task_id > %(children_after)s
              ORDER BY k.task_id LIMIT %(children)s) AS children
  FROM jobmachine.task t
  LEFT JOIN jobmachine.class c ON c.class_id = t.class_id
  LEFT JOIN jobmachine.worker w ON w.worker_id = t.worker_id
 WHERE t.task_id = %(task_id)s

-- name: admin_task_page_results
-- A task's results (or with %(errors)s its errors) below the result id
-- %(before)s, newest first, %(limit)s of them, each cut at %(max_text)s
-- characters with its whole length.
SELECT r.result_id, left(r.result, %(max_text)s) AS result, length(r.result) AS length
  FROM jobmachine.result r
 WHERE r.task_id = %(task_id)s AND r.result_id < %(before)s
   AND (r.resulttype IS NOT DISTINCT FROM 'error') = %(errors)s
 ORDER BY r.result_id DESC
 LIMIT %(limit)s

-- name: admin_result_text
-- The text of one result or error of a task, at most %(max_raw)s characters.
SELECT left(r.result, %(max_raw)s) AS result
  FROM jobmachine.result r
 WHERE r.task_id = %(task_id)s AND r.result_id = %(result_id)s
