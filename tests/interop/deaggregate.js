// Decodes Kinesis records with the public aws-kinesis-agg deaggregator, checksums on.
// Input: a JSON file of [{partitionKey, explicitPartitionKey, sequenceNumber, data (base64)}].
// Output (stdout): a JSON array with, per input record, its user records
// [{partitionKey, explicitPartitionKey, data (base64)}]. Any error exits non-zero.
'use strict';
const fs = require('fs');
const agg = require(process.env.KINESIS_AGG_MODULE || 'aws-kinesis-agg');

const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = [];
for (const record of input) {
  if (record.explicitPartitionKey === null) delete record.explicitPartitionKey;
  agg.deaggregateSync(record, true, (err, users) => {
    if (err) {
      process.stderr.write(`record ${record.sequenceNumber}: ${err}\n`);
      process.exit(1);
    }
    out.push(users.map((u) => ({
      partitionKey: u.partitionKey,
      explicitPartitionKey: u.explicitPartitionKey === undefined ? null : u.explicitPartitionKey,
      data: u.data,
    })));
  });
}
process.stdout.write(JSON.stringify(out));
