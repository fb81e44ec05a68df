;; Looks like a guest but has no hw_call (and hw_free has the wrong signature).
(module
  (memory (export "memory") 1)
  (func (export "hw_abi_version") (result i32) (i32.const 1))
  (func (export "hw_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hw_free") (param i32))
  (func (export "hw_describe") (result i64) (i64.const 0)))
