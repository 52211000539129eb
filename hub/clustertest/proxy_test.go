package clustertest

import (
	"io"
	"net"
	"sync"
)

// proxy forwards TCP connections to target and can refuse or cut the
// connections of chosen source addresses. Hubs dial out from their own
// loopback address (127.0.0.N), so the source address names the peer hub.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	blocked map[string]bool
	conns   map[net.Conn]string // both ends, by source IP
	closed  bool
}

func newProxy(listen, target string) (*proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, blocked: map[string]bool{}, conns: map[net.Conn]string{}}
	go p.serve()
	return p, nil
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		src := c.RemoteAddr().(*net.TCPAddr).IP.String()
		p.mu.Lock()
		if p.blocked[src] || p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		go p.pipe(c, src)
	}
}

func (p *proxy) pipe(c net.Conn, src string) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.blocked[src] || p.closed {
		p.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = src, src
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	go cp(u, c)
	go cp(c, u)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, u)
	p.mu.Unlock()
}

// block refuses new connections from the source IPs and cuts existing ones.
func (p *proxy) block(ips ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ip := range ips {
		p.blocked[ip] = true
	}
	for c, src := range p.conns {
		if p.blocked[src] {
			c.Close()
		}
	}
}

// heal lets every source through again.
func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = map[string]bool{}
}

func (p *proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
}
