//go:build wasip1

package wasm

import "unsafe"

// Blocks handed to the host: kept reachable here (Go's collector does not move objects, so
// their addresses stay valid) until the host frees them.
var pinned = map[uint32][]byte{}

func pin(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	p := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	pinned[p] = b
	return int64(p)<<32 | int64(uint32(len(b)))
}

//go:wasmexport hw_abi_version
func hwABIVersion() int32 { return abiVersion }

//go:wasmexport hw_alloc
func hwAlloc(n int32) int32 {
	if n <= 0 {
		return 0
	}
	return int32(pin(make([]byte, n)) >> 32)
}

//go:wasmexport hw_free
func hwFree(ptr, _ int32) { delete(pinned, uint32(ptr)) }

//go:wasmexport hw_describe
func hwDescribe() int64 { return pin(describe()) }

//go:wasmexport hw_call
func hwCall(function, ptr, n int32) int64 {
	batch, ok := pinned[uint32(ptr)]
	if !ok || int(n) > len(batch) {
		return 0
	}
	delete(pinned, uint32(ptr)) // the call owns the batch now
	return pin(callBatch(int(function), batch[:n]))
}
