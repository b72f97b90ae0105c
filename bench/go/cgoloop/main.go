// Command cgoloop is benchmark workload 2: a cgo service-like loop. Worker goroutines handle
// "requests": each decodes a small JSON request, hashes its payload and encodes a JSON reply
// (the Go work of a typical handler, a few microseconds), calls C.malloc/C.free, builds a
// C.CString it frees, and calls a C function that allocates and frees inside C: four C
// allocations per request.
// Usage: cgoloop [-workers N] [-requests N]
package main

/*
#include <stdlib.h>
#include <string.h>

// A C library call that allocates internally, like a parser or a compressor would.
static int parse_in_c(const char *s) {
	size_t n = strlen(s);
	char *copy = malloc(n + 1);
	memcpy(copy, s, n + 1);
	int sum = 0;
	for (size_t i = 0; i < n; i++) sum += copy[i];
	char *scratch = malloc(256 + (sum & 255));
	scratch[0] = (char)sum;
	sum += scratch[0];
	free(scratch);
	free(copy);
	return sum;
}
*/
import "C"

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"unsafe"
)

type request struct {
	ID      int               `json:"id"`
	User    string            `json:"user"`
	Payload string            `json:"payload"`
	Fields  map[string]string `json:"fields"`
}

type reply struct {
	ID     int    `json:"id"`
	Digest string `json:"digest"`
	Parsed int    `json:"parsed"`
}

//go:noinline
func handle(id int) int {
	raw := []byte(`{"id":` + strconv.Itoa(id) + `,"user":"user-` + strconv.Itoa(id%97) +
		`","payload":"lorem ipsum dolor sit amet consectetur","fields":{"a":"1","b":"2"}}`)
	var req request
	if err := json.Unmarshal(raw, &req); err != nil {
		panic(err)
	}
	digest := sha256.Sum256([]byte(req.Payload + req.User))
	fields := req.Fields
	buf := C.malloc(C.size_t(64 + id%512))
	*(*byte)(buf) = byte(id)
	C.free(buf)
	cs := C.CString("request-" + strconv.Itoa(id) + "-" + strconv.Itoa(len(fields)))
	sum := int(C.parse_in_c(cs))
	C.free(unsafe.Pointer(cs))
	out, err := json.Marshal(reply{ID: req.ID, Digest: fmt.Sprintf("%x", digest[:8]), Parsed: sum})
	if err != nil {
		panic(err)
	}
	return sum + len(out)
}

func main() {
	workers := flag.Int("workers", 8, "worker goroutines")
	requests := flag.Int("requests", 400000, "requests in total")
	flag.Parse()
	var wg sync.WaitGroup
	sums := make([]int, *workers)
	per := *requests / *workers
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				sums[w] += handle(w*per + i)
			}
		}(w)
	}
	wg.Wait()
	total := 0
	for _, s := range sums {
		total += s
	}
	fmt.Println("requests", per**workers, "checksum", total)
}
