// Package testport gives test servers that stop and restart (outage tests)
// a loopback port outside the kernel's ephemeral range.
//
// A server listening on a kernel-chosen port (127.0.0.1:0) gets one from the
// ephemeral range. While it is stopped, any outgoing connection on the
// machine may be given that same number as its local port, and a client
// that keeps dialling the stopped server can even connect to itself (TCP
// simultaneous open on loopback): the restart then fails with "address
// already in use". Ports below the ephemeral range are never handed out to
// outgoing connections, so a restart finds them free.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Listen listens on 127.0.0.1 at a free port below the ephemeral range
// (from /proc/sys/net/ipv4/ip_local_port_range; 32768 when unknown), trying
// random ports from 10000 up.
func Listen() (net.Listener, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11000 {
				low = v
			}
		}
	}
	var last error
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return ln, nil
		}
		last = err
	}
	return nil, fmt.Errorf("testport: no free port below %d: %w", low, last)
}
