;; A guest written by hand in WAT: the Headwater Wasm ABI (docs/wasm-abi.md) with nothing else,
;; for the host's tests. Every function is a map that passes records on unchanged, except that
;; on a record whose JSON text contains `!` it first writes "about to misbehave" to stderr and
;; then misbehaves:
;;   0 identity  does nothing wrong
;;   1 trap      executes `unreachable`
;;   2 spin      loops forever
;;   3 hog       grows its memory without end
;;   4 exit      calls proc_exit(3)
;;   5 garbage   returns a result that lies outside its memory (for every batch)
;;   6 oversized returns a result as large as its whole memory (for every batch)
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))

  (data (i32.const 16) "{\"abi\":1,\"sdk\":\"hostile.wat\",\"functions\":[{\"name\":\"identity\",\"kind\":\"map\"},{\"name\":\"trap\",\"kind\":\"map\"},{\"name\":\"spin\",\"kind\":\"map\"},{\"name\":\"hog\",\"kind\":\"map\"},{\"name\":\"exit\",\"kind\":\"map\"},{\"name\":\"garbage\",\"kind\":\"map\"},{\"name\":\"oversized\",\"kind\":\"map\"}]}")
  (data (i32.const 900) "about to misbehave\n")

  (func (export "hw_abi_version") (result i32) (i32.const 1))

  ;; Bump allocation within the current batch: the host's hw_alloc starts each batch, so it
  ;; starts over (this guest holds one batch at a time).
  (func (export "hw_alloc") (param $len i32) (result i32)
    (global.set $heap (i32.const 65536))
    (call $take (local.get $len)))

  (func $take (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
        (br $grow)))
    (local.get $p))

  (func (export "hw_free") (param i32 i32))

  ;; The description is the NUL-terminated text at 16.
  (func (export "hw_describe") (result i64)
    (local $end i32)
    (local.set $end (i32.const 16))
    (block $done
      (loop $scan
        (br_if $done (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $scan)))
    (i64.or (i64.shl (i64.const 16) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $end) (i32.const 16)))))

  (func $has_bang (param $p i32) (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $no
      (loop $scan
        (br_if $no (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 33)) (then (return (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))
    (i32.const 0))

  (func $misbehave (param $f i32)
    ;; stderr: one iovec at 800 pointing at the text at 900
    (i32.store (i32.const 800) (i32.const 900))
    (i32.store (i32.const 804) (i32.const 19))
    (drop (call $fd_write (i32.const 2) (i32.const 800) (i32.const 1) (i32.const 808)))
    (if (i32.eq (local.get $f) (i32.const 1)) (then (unreachable)))
    (if (i32.eq (local.get $f) (i32.const 2)) (then (loop $forever (br $forever))))
    (if (i32.eq (local.get $f) (i32.const 3))
      (then (loop $more (drop (memory.grow (i32.const 16))) (br $more))))
    (if (i32.eq (local.get $f) (i32.const 4)) (then (call $proc_exit (i32.const 3)))))

  ;; Results: per record, status 0, one output, "unchanged".
  (func (export "hw_call") (param $f i32) (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $at i32) (local $rlen i32) (local $out i32) (local $w i32)
    (local.set $n (i32.load (local.get $ptr)))
    (local.set $at (i32.add (local.get $ptr) (i32.const 4)))
    (local.set $out (call $take (i32.add (i32.const 4) (i32.mul (local.get $n) (i32.const 9)))))
    (i32.store (local.get $out) (local.get $n))
    (local.set $w (i32.add (local.get $out) (i32.const 4)))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $rlen (i32.load (local.get $at)))
        (if (call $has_bang (i32.add (local.get $at) (i32.const 4)) (local.get $rlen))
          (then (call $misbehave (local.get $f))))
        (local.set $at (i32.add (local.get $at) (i32.add (i32.const 4) (local.get $rlen))))
        (i32.store8 (local.get $w) (i32.const 0))
        (i32.store (i32.add (local.get $w) (i32.const 1)) (i32.const 1))
        (i32.store (i32.add (local.get $w) (i32.const 5)) (i32.const -1))
        (local.set $w (i32.add (local.get $w) (i32.const 9)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.eq (local.get $f) (i32.const 5))
      (then (return (i64.const 0x7fff000000000100))))
    (if (i32.eq (local.get $f) (i32.const 6))
      (then (return (i64.extend_i32_u (i32.shl (memory.size) (i32.const 16))))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $w) (local.get $out)))))
)
