-- GET /api/todos?limit=20 as store/postgres ListTodos runs it: the count, then the page
-- (two statements, autocommit each). :nusers REST users, ids 'BENCHREST' || 23 digits
-- (bench/load restUserID), each with 25+ todos. Evo passes is_complete as a NULL
-- parameter; pgbench cannot bind NULL, so it is a NULL literal here.
\set u random(1, :nusers)
SELECT count(*) FROM todos
	WHERE user_id = 'BENCHREST' || lpad(:u::text, 23, '0') AND (NULL::boolean IS NULL OR is_complete = NULL::boolean);
SELECT id::text, user_id, title, description, is_complete, created_at, updated_at FROM todos
	WHERE user_id = 'BENCHREST' || lpad(:u::text, 23, '0') AND (NULL::boolean IS NULL OR is_complete = NULL::boolean)
	ORDER BY created_at DESC, id DESC OFFSET 0 LIMIT 20;
