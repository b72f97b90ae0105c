// Command rocksdbsvc is a cgo service on a real C++ library, RocksDB (Debian's librocksdb)
// through github.com/linxGnu/grocksdb, with one known off-heap leak, for leak hunts and
// overhead benchmarks with offheap (issues 13 and 14).
//
// It opens a database in a fresh temporary directory (removed at the end), stores -keys users
// and -keys sessions of -value bytes each and flushes them to an SST file, so that reads go
// through RocksDB's block cache (-cache-mb, large enough to hold every block by default). With
// -warm (the default) every key is read once before the clock starts, so the cache is full and
// the leak is the only growth; -warm=false leaves a cache that fills while the leak runs (a
// bounded grower to tell from the leak). Then two paths run at rates fixed by flags, paced
// against the clock:
//
//	correct main.lookupUser:    Get, use the value, Slice.Free
//	leak    main.lookupSession: Get, use the value, no Free: the value's C copy (exactly
//	                            -value bytes, malloc'd by rocksdb_get) leaks
//
// On stderr it prints its truth: "rocksdbsvc: truth {json}" at start (rates, bytes per leaked
// slice), "rocksdbsvc: done {json}" at the end (calls per path, achieved rates, slices leaked).
//
// -bench N runs N operations flat out instead (three Gets, each freed, to one Put) and prints
// ops/s on stdout; the database is filled before the clock starts.
//
// Go programs leave through exit_group, which skips liboffheap's exit dump: run it under the
// library with OFFHEAP_INTERVAL set and a -duration of several intervals.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/linxGnu/grocksdb"

	"offheap.example/goreal/internal/svc"
)

type store struct {
	cache *grocksdb.Cache
	db    *grocksdb.DB
	ro    *grocksdb.ReadOptions
	wo    *grocksdb.WriteOptions
}

// sink keeps every value read observable, so no Get is dead code.
var sink [2]int // one per paced path: the two goroutines never write the same variable

func key(buf []byte, prefix string, id int) []byte {
	return strconv.AppendInt(append(buf[:0], prefix...), int64(id), 10)
}

// lookupUser is the correct path: the value's C copy is freed once used.
//
//go:noinline
func lookupUser(s *store, k []byte) int {
	v, err := s.db.Get(s.ro, k)
	if err != nil {
		fail(err)
	}
	n := use(v.Data())
	v.Free()
	return n
}

// lookupSession is the leak: the Slice is dropped without Free, and grocksdb sets no
// finalizer, so rocksdb_get's malloc'd copy of the value is never released.
//
//go:noinline
func lookupSession(s *store, k []byte) int {
	v, err := s.db.Get(s.ro, k)
	if err != nil {
		fail(err)
	}
	return use(v.Data())
}

// use stands for the request's work on the value; it must touch the bytes.
func use(b []byte) int {
	if len(b) == 0 {
		fail(fmt.Errorf("missing value"))
	}
	return len(b) + int(b[0]) + int(b[len(b)-1])
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rocksdbsvc:", err)
	os.Exit(1) // no deferred cleanup: the temporary directory is left for a post-mortem
}

func open(dir string, keys, size, cacheMB int) *store {
	cache := grocksdb.NewLRUCache(uint64(cacheMB) << 20)
	bbto := grocksdb.NewDefaultBlockBasedTableOptions()
	bbto.SetBlockCache(cache)
	opts := grocksdb.NewDefaultOptions()
	opts.SetCreateIfMissing(true)
	opts.SetBlockBasedTableFactory(bbto)
	db, err := grocksdb.OpenDb(opts, dir)
	opts.Destroy()
	bbto.Destroy()
	if err != nil {
		fail(err)
	}
	s := &store{cache: cache, db: db, ro: grocksdb.NewDefaultReadOptions(), wo: grocksdb.NewDefaultWriteOptions()}
	val := make([]byte, size)
	var buf []byte
	for i := 0; i < keys; i++ {
		for j := range val {
			val[j] = byte('a' + (i+j)%26)
		}
		for _, p := range []string{"user:", "session:"} {
			buf = key(buf, p, i)
			if err := db.Put(s.wo, buf, val); err != nil {
				fail(err)
			}
		}
	}
	fo := grocksdb.NewDefaultFlushOptions()
	fo.SetWait(true)
	if err := db.Flush(fo); err != nil {
		fail(err)
	}
	fo.Destroy()
	return s
}

// warmCache reads every key once, so that the block cache holds what the paths will read.
//
//go:noinline
func warmCache(s *store, keys int) {
	var buf []byte
	for i := 0; i < keys; i++ {
		for _, p := range []string{"user:", "session:"} {
			buf = key(buf, p, i)
			v, err := s.db.Get(s.ro, buf)
			if err != nil {
				fail(err)
			}
			use(v.Data())
			v.Free()
		}
	}
}

func (s *store) close() {
	s.ro.Destroy()
	s.wo.Destroy()
	s.db.Close()
	s.cache.Destroy()
}

// spread maps an operation number to a key, so that reads visit the whole key space in an
// order unrelated to how it was written (Knuth's multiplicative hash).
func spread(i, keys int) int { return int(uint32(i)*2654435761) % keys }

func main() {
	duration := flag.Duration("duration", 30*time.Second, "how long the service runs")
	userRate := flag.Float64("rate", 500, "correct-path requests (main.lookupUser) per second")
	leakRate := flag.Float64("leak-rate", 100, "leak-path requests (main.lookupSession) per second")
	keys := flag.Int("keys", 10000, "users and sessions stored")
	size := flag.Int("value", 512, "bytes per stored value")
	bench := flag.Int("bench", 0, "run this many Get/Put operations flat out, print ops/s, exit")
	workers := flag.Int("workers", 1, "goroutines sharing the -bench operations")
	cacheMB := flag.Int("cache-mb", 64, "block cache capacity, MiB")
	warm := flag.Bool("warm", true, "read every key once before the clock starts")
	flag.Parse()

	dir, err := os.MkdirTemp("", "rocksdbsvc")
	if err != nil {
		fail(err)
	}
	s := open(dir, *keys, *size, *cacheMB)
	if *warm {
		warmCache(s, *keys)
	}

	if *bench > 0 {
		bufs := make([][]byte, *workers)
		val := make([]byte, *size)
		svc.Bench("rocksdbsvc", *bench, *workers, func(w, i int) {
			bufs[w] = key(bufs[w], "user:", spread(i, *keys))
			if i%4 == 3 {
				if err := s.db.Put(s.wo, bufs[w], val); err != nil {
					fail(err)
				}
				return
			}
			lookupUser(s, bufs[w]) // a call into C is never elided; no shared sink to race on
		})
	} else {
		svc.Truth("rocksdbsvc", "truth", map[string]any{
			"duration_s":          duration.Seconds(),
			"value_bytes":         *size,
			"warm":                *warm,
			"lookupUser_per_s":    *userRate,
			"lookupSession_per_s": *leakRate,
			"leak_bytes_per_s":    *leakRate * float64(*size),
		})
		var ubuf, sbuf []byte
		counts, elapsed := svc.Run(*duration, []float64{*userRate, *leakRate}, []func(int){
			func(i int) {
				ubuf = key(ubuf, "user:", spread(i, *keys))
				sink[0] += lookupUser(s, ubuf)
			},
			func(i int) {
				sbuf = key(sbuf, "session:", spread(i, *keys))
				sink[1] += lookupSession(s, sbuf)
			},
		})
		sec := elapsed.Seconds()
		svc.Truth("rocksdbsvc", "done", map[string]any{
			"elapsed_s":           sec,
			"lookupUser_calls":    counts[0],
			"lookupSession_calls": counts[1],
			"lookupUser_per_s":    float64(counts[0]) / sec,
			"lookupSession_per_s": float64(counts[1]) / sec,
			"slices_leaked":       counts[1],
			"leaked_bytes":        counts[1] * *size,
		})
	}
	s.close()
	os.RemoveAll(dir)
}
