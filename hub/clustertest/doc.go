// Package clustertest runs real hub processes (the jasper binary, built
// once in TestMain) on loopback with a fault-injecting TCP proxy in front
// of each hub's raft port, to test partitions, kill -9 and restarts end to
// end. It holds tests only.
package clustertest
