module offheap.example/goreal

go 1.21

require (
	github.com/DataDog/zstd v1.5.7
	github.com/linxGnu/grocksdb v1.7.14
)
