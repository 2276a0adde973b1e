// The Go client of shardline's framed socket protocol: standard library only.
module shardline/clients/go

go 1.19
