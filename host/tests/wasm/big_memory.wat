;; Declares 128 MiB of memory up front (2048 pages of 64 KiB): more than a 64 MiB limit.
(module
  (memory (export "memory") 2048)
  (func (export "hw_abi_version") (result i32) (i32.const 1))
  (func (export "hw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hw_free") (param i32 i32))
  (func (export "hw_describe") (result i64) (i64.const 0))
  (func (export "hw_call") (param i32 i32 i32) (result i64) (i64.const 0)))
