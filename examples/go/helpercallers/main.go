// Command helpercallers leaks C memory through a helper of its own that three functions
// call, only one of which forgets to free: the report must blame that function, not the
// helper, and not the two that free.
//
// toC copies a string into C memory (C.CString). handleLogin and handleSearch free what it
// returns; handleUpload keeps it. A fourth function, keepSession, calls C.malloc directly
// from one call site and keeps a bounded number of blocks (its culprit is itself).
//
// It runs -rounds rounds, pausing -pause between them, then prints its truth as one JSON
// line on stderr (`helpercallers: truth {...}`) and returns from main (an exit dump).
package main

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"
)

// toC is the helper: every caller gets a C copy of s it must free.
//
//go:noinline
func toC(s string) *C.char {
	return C.CString(s)
}

//go:noinline
func handleLogin(user string) int {
	p := toC(user)
	defer C.free(unsafe.Pointer(p))
	return int(C.strlen(p))
}

//go:noinline
func handleSearch(query string) int {
	p := toC(query)
	n := int(C.strlen(p))
	C.free(unsafe.Pointer(p))
	return n
}

var uploads []*C.char

//go:noinline
func handleUpload(body string) int {
	p := toC(body) // kept: the leak
	uploads = append(uploads, p)
	return len(body)
}

var sessions [16]unsafe.Pointer

//go:noinline
func keepSession(i int) {
	slot := i % len(sessions)
	if sessions[slot] != nil {
		C.free(sessions[slot])
	}
	sessions[slot] = C.malloc(4096)
}

func main() {
	rounds := flag.Int("rounds", 60, "rounds")
	pause := flag.Duration("pause", 50*time.Millisecond, "pause between rounds")
	flag.Parse()
	body := strings.Repeat("u", 999) // 1,000 bytes with the NUL
	for r := 0; r < *rounds; r++ {
		for i := 0; i < 10; i++ {
			handleLogin("someone")
			handleSearch(strings.Repeat("q", 200))
			handleUpload(body)
			keepSession(r*10 + i)
		}
		time.Sleep(*pause)
	}
	truth, _ := json.Marshal(map[string]any{
		"leak_function":   "main.handleUpload",
		"helper_function": "main.toC",
		"leak_blocks":     len(uploads),
		"leak_bytes":      len(uploads) * (len(body) + 1),
		"session_blocks":  len(sessions),
		"session_bytes":   len(sessions) * 4096,
	})
	fmt.Fprintf(os.Stderr, "helpercallers: truth %s\n", truth)
}
