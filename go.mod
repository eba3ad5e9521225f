module github.com/iopool/iopool

go 1.24.0
