package main

// Blank imports pin the modules the design names until each is wired in.
import (
	_ "github.com/ClickHouse/clickhouse-go/v2"
	_ "github.com/google/gopacket/afpacket"
	_ "github.com/google/gopacket/layers"
	_ "github.com/google/gopacket/pcapgo"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/jasperfed/jasper/internal/config"
	_ "github.com/jasperfed/jasper/internal/obs"
	_ "github.com/jasperfed/jasper/internal/pki"
	_ "github.com/jasperfed/jasper/proto/jasper/v1"
	_ "github.com/maxmind/mmdbwriter"
	_ "github.com/oschwald/maxminddb-golang/v2"
	_ "golang.org/x/sync/errgroup"
)
