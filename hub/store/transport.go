package store

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jasperfed/jasper/internal/pki"
)

// tlsStream is a raft.StreamLayer over mutual TLS 1.3: the listener
// requires a client certificate of role hub, the dialer requires the server
// to be role hub (pki.VerifyPeer on both sides).
type tlsStream struct {
	net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	localIP   net.IP // source address for outgoing connections
}

// newTLSStream listens on bind and advertises advertise ("" = the bound
// address).
func newTLSStream(bind, advertise string, files pki.Files) (*tlsStream, error) {
	server, err := hubServerConfig(files)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	client, err := pki.ClientConfig(files)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", bind, err)
	}
	var adv net.Addr = ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("raft advertise address %s: %w", advertise, err)
		}
		adv = a
	}
	if ta, ok := adv.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address %s is unspecified: set raft.advertise", adv)
	}
	s := &tlsStream{Listener: ln, advertise: adv, server: server, client: client}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		s.localIP = ta.IP
	}
	return s, nil
}

// hubServerConfig is pki.ServerConfig plus the check that the client is a
// hub.
func hubServerConfig(files pki.Files) (*tls.Config, error) {
	base, err := pki.ServerConfig(files)
	if err != nil {
		return nil, err
	}
	inner := base.GetConfigForClient
	base.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := inner(h)
		if err != nil {
			return nil, err
		}
		pool := c.ClientCAs
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return pki.VerifyPeer(raw, pool, pki.RoleHub)
		}
		return c, nil
	}
	return base, nil
}

// Accept returns a TLS connection; the handshake runs on first use, so a
// slow peer does not hold up the accept loop.
func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, s.server), nil
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial connects to a peer hub and completes the handshake.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: s.localIP}
	}
	c, err := tls.DialWithDialer(d, "tcp", string(address), s.client)
	if err != nil {
		return nil, fmt.Errorf("dial hub %s: %w", address, err)
	}
	return c, nil
}
