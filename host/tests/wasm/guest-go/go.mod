module github.com/headwater-streaming/headwater/host/tests/wasm/guest-go

go 1.24.0

require github.com/headwater-streaming/headwater/sdk-go v0.0.0

replace github.com/headwater-streaming/headwater/sdk-go => ../../../../sdk-go
