;; A guest of a future ABI version.
(module
  (memory (export "memory") 1)
  (func (export "hw_abi_version") (result i32) (i32.const 2))
  (func (export "hw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hw_free") (param i32 i32))
  (func (export "hw_describe") (result i64) (i64.const 0))
  (func (export "hw_call") (param i32 i32 i32) (result i64) (i64.const 0)))
