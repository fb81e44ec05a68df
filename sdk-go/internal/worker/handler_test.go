package worker

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "github.com/headwater-streaming/headwater/sdk-go/internal/pb/udfv1"
)

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                     "plain",
		"  padded \n":               "padded",
		"first\nsecond\r\n\n third": "first second third",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

type panicky struct{}

func (*panicky) Error() string { panic("no text") }

func TestFailuresOfErrorMethodsAreContained(t *testing.T) {
	f := &Function{Name: "f", Kind: pb.FunctionKind_FUNCTION_KIND_MAP, Fill: func(pb.AggregateOp, *pb.Record, *pb.RecordResult) error {
		return &panicky{}
	}}
	h, err := New([]*Function{f})
	if err != nil {
		t.Fatal(err)
	}
	r := h.Process(&pb.BatchRequest{Function: "f", Records: []*pb.Record{{}}}).Results[0]
	if r.Error == nil || !strings.Contains(r.Error.Message, "Error or String method panicked") {
		t.Fatalf("%v", r)
	}
}

func TestDescribeFollowsTheChain(t *testing.T) {
	err := fmt.Errorf("outer: %w", errors.Join(errors.New("a"), errors.New("b")))
	got := Describe(err)
	if !strings.HasPrefix(got, "outer: a\nb\n\nerror chain: *fmt.wrapError -> *errors.joinError") {
		t.Fatalf("%q", got)
	}
}
