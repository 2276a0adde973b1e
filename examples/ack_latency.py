"""Latency of one acknowledged record at a time through the framed socket.

Sends N requests of one 200-byte record, each with `ack = true`, one after the
other on one connection, and prints the median and 90th percentile of the time
from the request's write to the agent's answer: one group commit (the
fdatasyncs that make the record durable) per request, nothing to share it with.

    python3 examples/ack_latency.py /run/shardline/ingest.sock 1000

The socket must be a `[[socket]]` with `framing = "frames"`; the endpoint may be
unreachable (the records only wait in the spool).
"""
import socket, struct, sys, time, statistics
def varint(n):
    out=b''
    while True:
        b=n&0x7f; n>>=7
        if n: out+=bytes([b|0x80])
        else: return out+bytes([b])
def field(tag, wt, payload):
    return varint((tag<<3)|wt)+payload
def ld(tag, b): return field(tag,2,varint(len(b))+b)
path=sys.argv[1]; n=int(sys.argv[2])
s=socket.socket(socket.AF_UNIX); s.connect(path)
lat=[]
for i in range(1,n+1):
    rec=ld(1,b"k%d"%i)+ld(3,b"x"*200)
    req=field(1,0,varint(i))+ld(2,rec)+field(3,0,varint(1))
    body=bytes([1])+req
    t=time.perf_counter()
    s.sendall(struct.pack(">I",len(body))+body)
    hdr=b''
    while len(hdr)<4: hdr+=s.recv(4-len(hdr))
    L=struct.unpack(">I",hdr)[0]; got=b''
    while len(got)<L: got+=s.recv(L-len(got))
    lat.append(time.perf_counter()-t)
lat.sort()
print("median %.3f ms  p90 %.3f ms" % (statistics.median(lat)*1e3, lat[int(len(lat)*0.9)]*1e3))
