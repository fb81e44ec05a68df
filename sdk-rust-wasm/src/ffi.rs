//! The memory side of the module's exports, used by [`crate::export!`] when compiled for
//! Wasm: blocks handed between host and module are `[u8]` allocations of exactly their length
//! (alignment 1), so `hw_free(ptr, len)` can release any of them.
#![allow(unsafe_code)]

use std::alloc::Layout;

use crate::Function;

/// Packs a block as `ptr << 32 | len` (0: none).
fn pack(block: Vec<u8>) -> i64 {
    if block.is_empty() {
        return 0;
    }
    let block: Box<[u8]> = block.into_boxed_slice();
    let len = block.len();
    let ptr = Box::into_raw(block) as *mut u8 as usize;
    ((ptr as u64) << 32 | len as u64) as i64
}

/// `hw_alloc`: a block of `len` bytes for the host to fill (0 when `len` is not positive or
/// memory runs out).
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    let Ok(layout) = Layout::array::<u8>(len) else {
        return 0;
    };
    if len == 0 {
        return 0;
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    ptr as usize as i32
}

/// `hw_free`.
///
/// # Safety
/// `ptr` and `len` must describe a block from [`alloc`], [`describe`] or [`call`] that was not
/// freed yet.
pub unsafe fn free(ptr: i32, len: i32) {
    let Ok(len) = usize::try_from(len) else {
        return;
    };
    if ptr == 0 || len == 0 {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as u32 as usize as *mut u8, len);
    // SAFETY: per the contract, the block is a live `[u8]` allocation of `len` bytes with
    // alignment 1, which is what a `Box<[u8]>` of that length owns.
    drop(unsafe { Box::from_raw(slice) });
}

/// `hw_describe`.
pub fn describe(functions: &[Function]) -> i64 {
    pack(crate::abi::describe(functions))
}

/// `hw_call`: takes the batch block and returns the results block (0 when the batch does not
/// decode or the function does not exist).
///
/// # Safety
/// `ptr` and `len` must describe a block from [`alloc`] that the caller gives up.
pub unsafe fn call(functions: &[Function], function: i32, ptr: i32, len: i32) -> i64 {
    let (Ok(index), Ok(len)) = (usize::try_from(function), usize::try_from(len)) else {
        return 0;
    };
    if ptr == 0 || len == 0 {
        return 0;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as u32 as usize as *mut u8, len);
    // SAFETY: per the contract, the block is a live allocation of `len` bytes from `alloc`
    // (alignment 1), now ours: a `Box<[u8]>` owns and frees it.
    let batch: Box<[u8]> = unsafe { Box::from_raw(slice) };
    match crate::abi::call_batch(functions, index, &batch) {
        Some(results) => pack(results),
        None => 0,
    }
}
