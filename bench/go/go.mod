module offheap.bench/go

go 1.19
