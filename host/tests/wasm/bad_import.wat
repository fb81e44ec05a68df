;; Asks the host for things it does not give: a function outside WASI, and a memory.
(module
  (import "env" "open_socket" (func (param i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func (export "hw_abi_version") (result i32) (i32.const 1))
  (func (export "hw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hw_free") (param i32 i32))
  (func (export "hw_describe") (result i64) (i64.const 0))
  (func (export "hw_call") (param i32 i32 i32) (result i64) (i64.const 0)))
