"""Writes the SQL script of benchmark workload 3 (sqlite3 CLI): inserts, an index, updates,
aggregates and string functions, allocation-heavy inside SQLite."""
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 60000
out = sys.stdout
out.write("PRAGMA journal_mode=OFF;\nCREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);\nBEGIN;\n")
for i in range(rows):
    out.write(f"INSERT INTO t(name, v) VALUES ('name-{i % 977}-{i}', {i * 0.5});\n")
out.write("COMMIT;\nCREATE INDEX tn ON t(name);\n")
out.write("UPDATE t SET name = upper(name) || '-' || length(name) WHERE id % 3 = 0;\n")
out.write("SELECT count(*), sum(v), max(length(name)) FROM t;\n")
out.write("SELECT substr(name, 1, 6) AS p, count(*) FROM t GROUP BY p ORDER BY 2 DESC LIMIT 5;\n")
out.write("SELECT group_concat(name, ',') IS NOT NULL FROM (SELECT name FROM t ORDER BY name LIMIT 20000);\n")
