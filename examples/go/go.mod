module offheap.example/examples

go 1.19
