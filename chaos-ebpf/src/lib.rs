#![no_std]
//! Exists so that `chaos-user` can declare a build dependency on this crate; the programs are the
//! `chaos-ebpf` binary target, built for `bpfel-unknown-none` by `chaos-user/build.rs`.
