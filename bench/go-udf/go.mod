module github.com/headwater-streaming/headwater/bench/go-udf

go 1.24.0

require github.com/headwater-streaming/headwater/sdk-go v0.0.0

require (
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
	google.golang.org/grpc v1.80.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/headwater-streaming/headwater/sdk-go => ../../sdk-go
