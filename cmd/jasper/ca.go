package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
)

func init() {
	caCommands["init"] = command{summary: "create the federation CA (ca.pem, ca-key.pem)", run: caInit}
	caCommands["issue"] = command{summary: "issue a hub, sensor, admin or analyst certificate", run: caIssue}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func caInit(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper ca init", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder to write ca.pem and ca-key.pem into (required)")
	name := fs.String("name", "jasper federation CA", "common name of the CA")
	validity := fs.Duration("validity", 10*365*24*time.Hour, "lifetime of the CA certificate")
	force := fs.Bool("force", false, "overwrite an existing CA in --dir")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if !*force {
		for _, f := range []string{"ca.pem", "ca-key.pem"} {
			if _, err := os.Stat(filepath.Join(*dir, f)); err == nil {
				return fmt.Errorf("%s already exists; refusing to overwrite a CA (use --force)", filepath.Join(*dir, f))
			}
		}
	}
	ca, err := pki.NewCA(*name, *validity)
	if err != nil {
		return fmt.Errorf("create CA: %w", err)
	}
	if err := ca.Save(*dir); err != nil {
		return fmt.Errorf("save CA in %s: %w", *dir, err)
	}
	fmt.Printf("CA %q written to %s (ca.pem, ca-key.pem), valid until %s\n", *name, *dir, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func caIssue(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper ca issue", flag.ContinueOnError)
	dir := fs.String("dir", "", "folder holding ca.pem and ca-key.pem (required)")
	role := fs.String("role", "", "hub, sensor, admin or analyst (required)")
	id := fs.String("id", "", "principal id, e.g. hub-1 or sensor-jp-1 (required)")
	country := fs.String("country", "", "ISO 3166-1 alpha-2 country (sensors, analysts)")
	var prefixes, dnsNames, ips stringList
	fs.Var(&prefixes, "prefix", "darknet prefix the sensor may report on (CIDR; repeatable)")
	fs.Var(&dnsNames, "dns", "DNS name for a server certificate (repeatable)")
	fs.Var(&ips, "ip", "IP address for a server certificate (repeatable)")
	validity := fs.Duration("validity", 720*time.Hour, "certificate lifetime")
	out := fs.String("out", "", "folder to write ID.pem and ID-key.pem into (default --dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case *dir == "":
		return errors.New("--dir is required (the folder of ca.pem and ca-key.pem)")
	case *role == "":
		return errors.New("--role is required (hub, sensor, admin or analyst)")
	case *id == "":
		return errors.New("--id is required")
	}
	ident := pki.Identity{Role: pki.Role(*role), ID: *id, Country: strings.ToUpper(*country)}
	for _, p := range prefixes {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			return fmt.Errorf("--prefix %q: %w", p, err)
		}
		if pp != pp.Masked() {
			return fmt.Errorf("--prefix %q has host bits set (did you mean %s?)", p, pp.Masked())
		}
		ident.Prefixes = append(ident.Prefixes, pp)
	}
	if ident.Role != pki.RoleSensor && len(ident.Prefixes) > 0 {
		return fmt.Errorf("--prefix applies to sensor certificates only, not role %s", ident.Role)
	}
	if err := ident.Validate(); err != nil {
		return fmt.Errorf("certificate identity: %w", err)
	}
	req := pki.IssueRequest{Identity: ident, DNSNames: dnsNames, Validity: *validity}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--ip %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	ca, err := pki.LoadCA(*dir)
	if err != nil {
		return err
	}
	is, err := ca.Issue(req)
	if err != nil {
		return fmt.Errorf("issue %s: %w", ident, err)
	}
	if *out == "" {
		*out = *dir
	}
	if err := pki.WriteIssued(*out, *id, is); err != nil {
		return fmt.Errorf("write certificate to %s: %w", *out, err)
	}
	fmt.Printf("issued %s: %s and %s, valid until %s\n", ident, filepath.Join(*out, *id+".pem"), filepath.Join(*out, *id+"-key.pem"), is.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
