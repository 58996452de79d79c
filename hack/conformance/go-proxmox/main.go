// Command go-proxmox-client drives a Proxmox VE API (real, or pve_sim) through the third-party Go library
// github.com/luthermonson/go-proxmox, which sends its POST/PUT parameters as JSON bodies. It is the
// non-Python client of tests/conformance (tests/conformance/test_go_proxmox.py); it is built, and cached
// outside the clone, by hack/build-go-proxmox-client.sh.
//
// Each step prints exactly one JSON line on stdout: {"step": ..., "ok": true, ...} or, on failure,
// {"step": ..., "ok": false, "error": ..., "status": <HTTP status when the API answered>} and the command
// exits 1. Steps that start a task wait for it (GET /nodes/{node}/tasks/{upid}/status) before printing.
//
// Usage:
//
//	go-proxmox-client [flags] [step ...]
//
// Steps (default: version nodes create start stop delete):
//
//	version      GET /version
//	nodes        GET /nodes
//	create       POST /nodes/{node}/lxc (JSON body: vmid, ostemplate, hostname, storage, memory, net0[, pool])
//	status       GET /nodes/{node}/lxc/{vmid}/status/current and .../config
//	start        POST /nodes/{node}/lxc/{vmid}/status/start
//	stop         POST /nodes/{node}/lxc/{vmid}/status/stop
//	delete       DELETE /nodes/{node}/lxc/{vmid}
//	pool-create  POST /pools (JSON body: poolid, comment)
//	pool-delete  DELETE /pools?poolid={pool}
//
// Connection flags default to environment variables: -url PVE_URL (https://host:port/api2/json),
// -token-id PVE_TOKEN_ID (user@realm!name) with -token-secret PVE_TOKEN_SECRET, or -user PVE_USER with
// -password PVE_PASSWORD (ticket login), -ca-file PVE_CA_FILE (PEM bundle to verify the server with) or
// -insecure (PVE_INSECURE=1; no verification).
//
// With -pause the command reads one line from stdin after each step's line before going on, so that a test
// can check the server's state between steps within one client session.
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
)

const libraryPath = "github.com/luthermonson/go-proxmox"

type config struct {
	url, tokenID, tokenSecret, user, password, caFile string
	insecure                                          bool
	node, hostname, ostemplate, storage, net, pool    string
	comment                                           string
	vmid, memory                                      int
	pause                                             bool
	timeout                                           time.Duration
}

func env(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}

func envInt(name string, fallback int) int {
	if v, ok := os.LookupEnv(name); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return fallback
}

// libraryVersion is the go-proxmox version compiled in, from the build info.
func libraryVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == libraryPath {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

func emit(fields map[string]any) {
	line, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

// fail prints the step's failure line and exits 1.
func fail(step string, err error) {
	fields := map[string]any{"step": step, "ok": false, "error": err.Error()}
	var apiErr *proxmox.APIError
	if errors.As(err, &apiErr) {
		fields["status"] = apiErr.StatusCode
	}
	emit(fields)
	os.Exit(1)
}

func newClient(cfg *config) (*proxmox.Client, error) {
	if cfg.url == "" {
		return nil, errors.New("no API URL: set -url or PVE_URL (https://host:port/api2/json)")
	}
	opts := []proxmox.Option{
		proxmox.WithTimeout(cfg.timeout),
		proxmox.WithUserAgent("pve-operator-conformance/go-proxmox-" + libraryVersion()),
	}
	switch {
	case cfg.insecure:
		opts = append(opts, proxmox.WithInsecureSkipVerify())
	case cfg.caFile != "":
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", cfg.caFile)
		}
		opts = append(opts, proxmox.WithRootCAs(pool))
	}
	switch {
	case cfg.tokenID != "":
		opts = append(opts, proxmox.WithAPIToken(cfg.tokenID, cfg.tokenSecret))
	case cfg.user != "":
		opts = append(opts, proxmox.WithCredentials(&proxmox.Credentials{Username: cfg.user, Password: cfg.password}))
	default:
		return nil, errors.New("no credentials: set -token-id/-token-secret or -user/-password")
	}
	return proxmox.NewClient(cfg.url, opts...), nil
}

// wait waits for task and returns the fields describing how it ended.
func wait(ctx context.Context, task *proxmox.Task, timeout time.Duration) (map[string]any, error) {
	if task == nil {
		return nil, errors.New("the API returned no UPID")
	}
	if err := task.Wait(ctx, 100*time.Millisecond, timeout); err != nil {
		return nil, fmt.Errorf("task %s: %w", task.UPID, err)
	}
	return map[string]any{
		"upid":       string(task.UPID),
		"task_node":  task.Node,
		"task_type":  task.Type,
		"task_id":    task.ID,
		"task_user":  task.User,
		"exitstatus": task.ExitStatus,
	}, nil
}

func runStep(ctx context.Context, client *proxmox.Client, cfg *config, step string) (map[string]any, error) {
	node := client.NodeRef(cfg.node)
	ct := node.ContainerRef(cfg.vmid)
	switch step {
	case "version":
		v, err := client.Version(ctx)
		if err != nil {
			return nil, err
		}
		return map[string]any{"version": v.Version, "release": v.Release, "repoid": v.RepoID,
			"library": libraryPath + " " + libraryVersion()}, nil
	case "nodes":
		nodes, err := client.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		names := []string{}
		statuses := map[string]string{}
		for _, n := range nodes {
			names = append(names, n.Node)
			statuses[n.Node] = n.Status
		}
		return map[string]any{"nodes": names, "statuses": statuses}, nil
	case "create":
		options := []proxmox.ContainerOption{
			{Name: "ostemplate", Value: cfg.ostemplate},
			{Name: "hostname", Value: cfg.hostname},
			{Name: "storage", Value: cfg.storage},
			{Name: "memory", Value: cfg.memory},
			{Name: "net0", Value: cfg.net},
		}
		if cfg.pool != "" {
			options = append(options, proxmox.ContainerOption{Name: "pool", Value: cfg.pool})
		}
		task, err := node.NewContainer(ctx, cfg.vmid, options...)
		if err != nil {
			return nil, err
		}
		return wait(ctx, task, cfg.timeout)
	case "status":
		c, err := node.Container(ctx, cfg.vmid)
		if err != nil {
			return nil, err
		}
		return map[string]any{"vmid": uint64(c.VMID), "status": c.Status, "name": c.Name,
			"hostname": c.ContainerConfig.Hostname, "memory": c.ContainerConfig.Memory}, nil
	case "start":
		task, err := ct.Start(ctx)
		if err != nil {
			return nil, err
		}
		return wait(ctx, task, cfg.timeout)
	case "stop":
		task, err := ct.Stop(ctx)
		if err != nil {
			return nil, err
		}
		return wait(ctx, task, cfg.timeout)
	case "delete":
		task, err := ct.Delete(ctx, nil)
		if err != nil {
			return nil, err
		}
		return wait(ctx, task, cfg.timeout)
	case "pool-create":
		if err := client.NewPool(ctx, cfg.pool, cfg.comment); err != nil {
			return nil, err
		}
		return map[string]any{"poolid": cfg.pool}, nil
	case "pool-delete":
		pool, err := client.Pool(ctx, cfg.pool)
		if err != nil {
			return nil, err
		}
		if err := pool.Delete(ctx); err != nil {
			return nil, err
		}
		return map[string]any{"poolid": cfg.pool}, nil
	}
	return nil, fmt.Errorf("unknown step %q", step)
}

func main() {
	cfg := &config{}
	flag.StringVar(&cfg.url, "url", env("PVE_URL", ""), "API base URL, https://host:port/api2/json (PVE_URL)")
	flag.StringVar(&cfg.tokenID, "token-id", env("PVE_TOKEN_ID", ""), "API token id user@realm!name (PVE_TOKEN_ID)")
	flag.StringVar(&cfg.tokenSecret, "token-secret", env("PVE_TOKEN_SECRET", ""), "API token secret (PVE_TOKEN_SECRET)")
	flag.StringVar(&cfg.user, "user", env("PVE_USER", ""), "user for a ticket login, user@realm (PVE_USER)")
	flag.StringVar(&cfg.password, "password", env("PVE_PASSWORD", ""), "password for a ticket login (PVE_PASSWORD)")
	flag.StringVar(&cfg.caFile, "ca-file", env("PVE_CA_FILE", ""), "PEM CA bundle to verify the server with (PVE_CA_FILE)")
	flag.BoolVar(&cfg.insecure, "insecure", env("PVE_INSECURE", "") == "1", "do not verify the server's certificate (PVE_INSECURE=1)")
	flag.StringVar(&cfg.node, "node", env("PVE_NODE", ""), "node to create the CT on (PVE_NODE)")
	flag.IntVar(&cfg.vmid, "vmid", envInt("PVE_VMID", 0), "CT id (PVE_VMID)")
	flag.StringVar(&cfg.hostname, "hostname", env("PVE_HOSTNAME", "go-proxmox-ct"), "CT hostname (PVE_HOSTNAME)")
	flag.StringVar(&cfg.ostemplate, "ostemplate", env("PVE_OSTEMPLATE", ""), "template volume id (PVE_OSTEMPLATE)")
	flag.StringVar(&cfg.storage, "storage", env("PVE_STORAGE", "local-lvm"), "rootfs storage (PVE_STORAGE)")
	flag.IntVar(&cfg.memory, "memory", envInt("PVE_MEMORY", 512), "memory in MiB (PVE_MEMORY)")
	flag.StringVar(&cfg.net, "net", env("PVE_NET0", "name=eth0,bridge=vmbr0,ip=dhcp"), "net0 (PVE_NET0)")
	flag.StringVar(&cfg.pool, "pool", env("PVE_POOL", ""), "pool id: for create (optional), pool-create, pool-delete (PVE_POOL)")
	flag.StringVar(&cfg.comment, "comment", env("PVE_POOL_COMMENT", "created by go-proxmox"), "pool comment (PVE_POOL_COMMENT)")
	flag.BoolVar(&cfg.pause, "pause", false, "after each step, wait for a line on stdin")
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "HTTP timeout and the wait for each task")
	printVersion := flag.Bool("library-version", false, "print the go-proxmox version compiled in and exit")
	flag.Parse()

	if *printVersion {
		fmt.Println(libraryVersion())
		return
	}
	steps := flag.Args()
	if len(steps) == 0 {
		steps = []string{"version", "nodes", "create", "start", "stop", "delete"}
	}
	client, err := newClient(cfg)
	if err != nil {
		fail("connect", err)
	}
	ctx := context.Background()
	stdin := bufio.NewReader(os.Stdin)
	for i, step := range steps {
		fields, err := runStep(ctx, client, cfg, step)
		if err != nil {
			fail(step, err)
		}
		fields["step"] = step
		fields["ok"] = true
		emit(fields)
		if cfg.pause && i < len(steps)-1 {
			if _, err := stdin.ReadString('\n'); err != nil {
				fail(step, fmt.Errorf("-pause: reading stdin: %w", err))
			}
		}
	}
}
