//go:build !linux

package demo

import "syscall"

// hubProcAttr: no process group or parent-death signal outside Linux.
func hubProcAttr() *syscall.SysProcAttr { return nil }
