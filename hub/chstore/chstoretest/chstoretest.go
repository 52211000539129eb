// Package chstoretest gives tests a real ClickHouse: a fresh database on the
// server named by $JASPER_TEST_CLICKHOUSE (CI starts one with
// .ci/setup-clickhouse.sh), or a private server of their own started with
// deploy/clickhouse/start.sh, which a test may stop, kill and restart.
package chstoretest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// EnvAddr names the variable holding the test server's native address.
const EnvAddr = "JASPER_TEST_CLICKHOUSE"

// Addr returns $JASPER_TEST_CLICKHOUSE or skips the test with a message
// saying how to get a server.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		t.Skip(EnvAddr + " is unset: no ClickHouse server for this test " +
			"(start one: deploy/clickhouse/start.sh /tmp/ch 19000 && export " + EnvAddr + "=127.0.0.1:19000)")
	}
	return addr
}

// Connect opens a native connection to addr and pings it; the test fails if
// that does not work. The connection is closed on cleanup.
func Connect(t testing.TB, addr string) driver.Conn {
	t.Helper()
	conn, err := Open(addr)
	if err != nil {
		t.Fatalf("clickhouse %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Open opens a native connection to addr as user default and pings it.
func Open(addr string) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// NewDatabase creates a fresh, empty database on the server at
// $JASPER_TEST_CLICKHOUSE (skipping the test when it is unset) and drops it
// on cleanup. It returns a connection and the database name.
func NewDatabase(t testing.TB) (driver.Conn, string) {
	t.Helper()
	return NewDatabaseAt(t, Addr(t))
}

// NewDatabaseAt is NewDatabase on the server at addr.
func NewDatabaseAt(t testing.TB, addr string) (driver.Conn, string) {
	t.Helper()
	conn := Connect(t, addr)
	var b [6]byte
	_, _ = rand.Read(b[:])
	db := "test_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatalf("create database %s: %v", db, err)
	}
	t.Cleanup(func() {
		// A fresh connection: the test's may be closed or its server
		// restarted by now.
		c, err := Open(addr)
		if err != nil {
			t.Logf("drop database %s: %v", db, err)
			return
		}
		defer c.Close()
		if err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Logf("drop database %s: %v", db, err)
		}
	})
	return conn, db
}

// Server is a private clickhouse-server started by deploy/clickhouse/start.sh
// in a temporary directory, on free loopback ports.
type Server struct {
	t        testing.TB
	Dir      string
	TCPPort  int
	HTTPPort int
	scripts  string
}

// Addr is the server's native protocol address.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.TCPPort) }

// StartServer starts a private server for this test and stops it on cleanup.
// It skips the test when clickhouse-server is not installed.
func StartServer(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if _, err := exec.LookPath("clickhouse"); err != nil {
			t.Skip("clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client)")
		}
	}
	scripts, err := findScripts()
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 2)
	s := &Server{t: t, Dir: t.TempDir(), TCPPort: ports[0], HTTPPort: ports[1], scripts: scripts}
	t.Cleanup(func() { s.run("stop.sh", s.Dir) })
	s.Start()
	return s
}

// Start (re)starts the server on the same ports and data directory and
// waits until it answers.
func (s *Server) Start() {
	s.t.Helper()
	if out, err := s.run("start.sh", s.Dir, strconv.Itoa(s.TCPPort), strconv.Itoa(s.HTTPPort)); err != nil {
		s.t.Fatalf("start clickhouse: %v\n%s", err, out)
	}
}

// Stop stops the server gracefully (SIGTERM, then SIGKILL after 20 s).
func (s *Server) Stop() {
	s.t.Helper()
	if out, err := s.run("stop.sh", s.Dir); err != nil {
		s.t.Fatalf("stop clickhouse: %v\n%s", err, out)
	}
}

// Kill kills the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.t.Helper()
	if out, err := s.run("stop.sh", "--kill", s.Dir); err != nil {
		s.t.Fatalf("kill clickhouse: %v\n%s", err, out)
	}
}

func (s *Server) run(script string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.scripts, script), args...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// findScripts walks up from the working directory to the module root and
// returns its deploy/clickhouse folder.
func findScripts() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "deploy", "clickhouse")
			if _, err := os.Stat(filepath.Join(p, "start.sh")); err != nil {
				return "", fmt.Errorf("no deploy/clickhouse/start.sh under module root %s", dir)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
