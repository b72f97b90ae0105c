// Command gosqlite is a real cgo service under load for the hostile-world suite (issue 7):
// github.com/mattn/go-sqlite3 (SQLite compiled into the binary, all of its memory from the
// C allocator) serving thousands of queries from many goroutines.
//
// It creates a database file in a fresh temporary directory (WAL journal, busy timeout;
// removed at the end), inserts -rows rows in one
// transaction, then -goroutines goroutines each run -queries queries: point lookups, range
// aggregates, LIKE scans, and every tenth an UPDATE in its own transaction that is undone
// by the next one, on a column the queries never read (so no result and not the final
// state depend on the interleaving). Every result is
// folded into a per-goroutine checksum that depends only on the goroutine and query number.
// stdout (deterministic):
//
//	gosqlite: rows=R goroutines=G queries=Q checksum=<hex> final=<hex>
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"

	_ "github.com/mattn/go-sqlite3"
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gosqlite:", err)
		os.Exit(1) // no deferred cleanup: the temporary directory is left for a post-mortem
	}
}

func main() {
	rows := flag.Int("rows", 2000, "rows to insert")
	goroutines := flag.Int("goroutines", 32, "concurrent goroutines")
	queries := flag.Int("queries", 300, "queries per goroutine")
	flag.Parse()

	tmp, err := os.MkdirTemp("", "gosqlite")
	must(err)
	defer os.RemoveAll(tmp)
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(tmp, "db.sqlite")+"?_busy_timeout=30000&_journal_mode=WAL&_txlock=immediate")
	must(err)
	db.SetMaxOpenConns(8)
	defer db.Close()
	_, err = db.Exec(`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, score INTEGER, blob BLOB, hits INTEGER DEFAULT 0)`)
	must(err)
	tx, err := db.Begin()
	must(err)
	ins, err := tx.Prepare(`INSERT INTO items (id, name, score, blob) VALUES (?, ?, ?, ?)`)
	must(err)
	for i := 0; i < *rows; i++ {
		blob := make([]byte, 16+i%200)
		for j := range blob {
			blob[j] = byte(i + j)
		}
		_, err = ins.Exec(i, fmt.Sprintf("item-%05d-%s", i, []string{"red", "green", "blue"}[i%3]), (i*7919)%1000, blob)
		must(err)
	}
	must(ins.Close())
	must(tx.Commit())

	sums := make([]uint64, *goroutines)
	var wg sync.WaitGroup
	for g := 0; g < *goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			h := fnv.New64a()
			for q := 0; q < *queries; q++ {
				k := (g*7907 + q*104729) % *rows
				switch q % 10 {
				case 0, 1, 2, 3:
					var name string
					var score int
					var blob []byte
					must(db.QueryRow(`SELECT name, score, blob FROM items WHERE id = ?`, k).Scan(&name, &score, &blob))
					fmt.Fprintf(h, "%s|%d|%d;", name, score, len(blob))
				case 4, 5:
					var n, total int
					must(db.QueryRow(`SELECT count(*), coalesce(sum(score),0) FROM items WHERE id BETWEEN ? AND ?`, k, k+50).Scan(&n, &total))
					fmt.Fprintf(h, "%d|%d;", n, total)
				case 6, 7:
					r, err := db.Query(`SELECT id, length(name) FROM items WHERE name LIKE ? ORDER BY id LIMIT 20`, fmt.Sprintf("item-%03d%%", k%100))
					must(err)
					for r.Next() {
						var id, l int
						must(r.Scan(&id, &l))
						fmt.Fprintf(h, "%d:%d,", id, l)
					}
					must(r.Err())
					must(r.Close())
				case 8:
					// +1 then -1 on the same row in separate transactions: net zero, and on a
					// column no query reads, so no result depends on the interleaving.
					for _, d := range []int{1, -1} {
						tx, err := db.Begin()
						must(err)
						_, err = tx.Exec(`UPDATE items SET hits = hits + ? WHERE id = ?`, d, k)
						must(err)
						must(tx.Commit())
					}
				case 9:
					var s string
					must(db.QueryRow(`SELECT group_concat(name, ',') FROM (SELECT name FROM items WHERE score = ? ORDER BY id LIMIT 5)`, k%1000).Scan(&s))
					fmt.Fprintf(h, "%s;", s)
				}
			}
			sums[g] = h.Sum64()
		}(g)
	}
	wg.Wait()
	all := fnv.New64a()
	for _, s := range sums {
		fmt.Fprintf(all, "%x.", s)
	}
	var total, n, hits int
	must(db.QueryRow(`SELECT count(*), sum(score), sum(hits) FROM items`).Scan(&n, &total, &hits))
	fmt.Printf("gosqlite: rows=%d goroutines=%d queries=%d checksum=%x final=%x\n",
		*rows, *goroutines, *queries, all.Sum64(), uint64(n)<<32|uint64(total)+uint64(hits))
}
