-- GET /api/todos?limit=20 as store/postgres ListTodos runs it (listAllSQL): the count
-- and the page in one statement. :nusers REST users, ids 'BENCHREST' || 23 digits
-- (bench/load restUserID), each with 25 todos.
\set u random(1, :nusers)
SELECT coalesce(p.id::text, ''), coalesce(p.title, ''), p.description,
	coalesce(p.is_complete, false), coalesce(p.created_at, 'epoch'), coalesce(p.updated_at, 'epoch'), c.total
FROM (SELECT count(*) AS total FROM todos WHERE user_id = 'BENCHREST' || lpad(:u::text, 23, '0')) c
LEFT JOIN LATERAL (SELECT id, title, description, is_complete, created_at, updated_at FROM todos
	WHERE user_id = 'BENCHREST' || lpad(:u::text, 23, '0')
	ORDER BY created_at DESC, id DESC OFFSET 0 LIMIT 20) p ON true
ORDER BY p.created_at DESC, p.id DESC;
