package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jasperfed/jasper/dashboards"
)

var dashboardsCommands = map[string]command{
	"passwd": {summary: "read a password on stdin, print its bcrypt hash for the accounts file", run: dashboardsPasswd},
	"token":  {summary: "make an API token; print it and its sha256 for the accounts file", run: dashboardsToken},
}

func init() {
	register("dashboards", "helpers for the dashboards' accounts file", func(ctx context.Context, args []string) error {
		return subcommands(ctx, "dashboards", args, dashboardsCommands)
	})
}

func dashboardsPasswd(_ context.Context, args []string) error {
	if len(args) != 0 {
		return errors.New("usage: jasper dashboards passwd < password-file")
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("read password from stdin: %w", err)
	}
	h, err := dashboards.HashPassword(strings.TrimRight(line, "\r\n"))
	if err != nil {
		return err
	}
	fmt.Printf("password_bcrypt: %q\n", h)
	return nil
}

func dashboardsToken(_ context.Context, args []string) error {
	if len(args) != 0 {
		return errors.New("usage: jasper dashboards token")
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	fmt.Printf("token (give to the script, shown once): %s\ntokens_sha256 entry: %s\n", tok, dashboards.TokenDigest(tok))
	return nil
}
