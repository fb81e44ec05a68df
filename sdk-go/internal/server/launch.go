package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/headwater-streaming/headwater/sdk-go/internal/worker"
)

// Exit codes of a worker process.
const (
	// ExitOK: stopped by SIGTERM/SIGINT, or the host is gone.
	ExitOK = 0
	// ExitFailure: cannot listen, or serving failed.
	ExitFailure = 1
	// ExitUsage: bad command line or environment.
	ExitUsage = 2
	// ExitRegistration: no functions, or functions that cannot be served (duplicate names, ...).
	ExitRegistration = 3
)

// ParentPoll is how often a worker started with --socket checks that the host is still its
// parent.
const ParentPoll = 500 * time.Millisecond

// HostPIDEnv names the variable in which the host passes its process id.
const HostPIDEnv = "HEADWATER_HOST_PID"

const usage = `Serves Headwater UDFs over gRPC. The Headwater host starts this program itself
(%[1]s --socket PATH, with %[2]s set); run it by hand to debug, or as a sidecar container
(%[1]s --address 0.0.0.0:50051).

Flags:
`

// Main runs the worker process: parses args (--socket PATH or --address HOST:PORT), builds
// the handler, listens, prints the readiness line to stdout and serves until SIGTERM/SIGINT
// or, when started with --socket, until the host process is gone. It returns the exit code.
func Main(args []string, handler func() (*worker.Handler, error), stdout, stderr io.Writer) int {
	prog := "worker"
	if len(os.Args) > 0 {
		prog = os.Args[0]
	}
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "Unix domain socket `path` to listen on (a stale file there is removed)")
	address := fs.String("address", "", "`host:port` to listen on (sidecar containers)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, prog, HostPIDEnv)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "headwater worker: "+format+"\n", a...)
		return code
	}
	if fs.NArg() > 0 {
		return fail(ExitUsage, "unexpected argument %q; give --socket PATH or --address HOST:PORT", fs.Arg(0))
	}
	if (*socket == "") == (*address == "") {
		return fail(ExitUsage, "give exactly one of --socket PATH or --address HOST:PORT")
	}
	TuneGC()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if *socket != "" {
		// Started by a host: exit with it, even when it was killed and could not stop us. The
		// host passes its pid, so a host killed before this line is noticed too.
		host := os.Getppid()
		if v := os.Getenv(HostPIDEnv); v != "" {
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return fail(ExitUsage, "%s=%q is not a process id", HostPIDEnv, v)
			}
			host = pid
		}
		if os.Getppid() != host {
			return ExitOK
		}
		go exitWithParent(host, cancel)
	}

	h, err := handler()
	if err != nil {
		return fail(ExitRegistration, "%v", err)
	}
	lis, where, err := listen(*socket, *address)
	if err != nil {
		return fail(ExitFailure, "%v", err)
	}
	fmt.Fprintf(stdout, "headwater worker ready on %s: %s\n", where, strings.Join(h.Names(), ", "))
	if err := Serve(ctx, lis, h); err != nil {
		return fail(ExitFailure, "serving on %s: %v", where, err)
	}
	return ExitOK
}

// exitWithParent stops the worker when its parent is no longer the host: an orphaned worker
// would hold memory and sockets forever. The stop is graceful but short; a worker that has
// not exited soon after is ended.
func exitWithParent(host int, stop context.CancelFunc) {
	for {
		time.Sleep(ParentPoll)
		if os.Getppid() != host {
			stop()
			time.Sleep(2 * StopGrace)
			os.Exit(ExitOK)
		}
	}
}

// listen opens the listener and returns it with the address for the readiness line:
// "unix:PATH" for a socket, the bound host:port for TCP (so port 0 shows the real port).
func listen(socket, address string) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(address, "unix:"); ok && socket == "" {
		socket = path
	}
	if socket != "" {
		if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("cannot remove the stale socket %s: %w", socket, err)
		}
		lis, err := net.Listen("unix", socket)
		if err != nil {
			return nil, "", fmt.Errorf("cannot listen on unix:%s: %w", socket, err)
		}
		return lis, "unix:" + socket, nil
	}
	lis, err := net.Listen("tcp", address)
	if err != nil {
		return nil, "", fmt.Errorf("cannot listen on %s: %w", address, err)
	}
	return lis, lis.Addr().String(), nil
}

// WorkerGCPercent is the garbage collector's target a worker runs with unless $GOGC says
// otherwise: a worker's live heap is small (the batches in flight), and a collection every
// 100 % of it spends more time collecting than computing; 400 % cut the worker's CPU time by
// about a tenth in `./dev bench go`.
const WorkerGCPercent = 400

// TuneGC sets the garbage collector's target to WorkerGCPercent when $GOGC is not set.
func TuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(WorkerGCPercent)
	}
}
