module offheap.example/examples

go 1.19

// v0.30.0 is the newest x/sys whose go.mod still allows go1.19 (v0.31.0 needs go 1.23);
// rawmmap uses it for unix.Mmap/Munmap/Mremap.
require golang.org/x/sys v0.30.0
