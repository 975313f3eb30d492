"""A Kafka client for the broker tests (kafka-python), through a sidecar's local forward.

    kafka_peer.py produce PORT TOPIC COUNT   create TOPIC with 3 partitions, send COUNT keyed
                                             messages round-robin over them, print "produced N"
    kafka_peer.py consume PORT TOPIC COUNT   read as a consumer group until COUNT messages;
                                             print "PARTITION VALUE" for each, then "consumed N"

The broker advertises the forward's address, so every connection the client opens after
bootstrapping (to the address in the metadata) goes through the mesh too.
"""

import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic


def say(line):
    print(line, flush=True)


def main():
    role, port, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    boot = f"127.0.0.1:{port}"
    if role == "produce":
        admin = KafkaAdminClient(bootstrap_servers=boot, client_id="trip-admin")
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=boot, acks="all", client_id="trip")
        for i in range(count):
            producer.send(topic, key=f"ride-{i}".encode(), value=f"ride-{i}".encode(), partition=i % 3)
        producer.flush()
        producer.close()
        say(f"produced {count}")
    elif role == "consume":
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=boot,
            group_id="billing",
            client_id="billing",
            auto_offset_reset="earliest",
            consumer_timeout_ms=30000,
        )
        seen = 0
        for m in consumer:
            say(f"{m.partition} {m.value.decode()}")
            seen += 1
            if seen >= count:
                break
        consumer.commit()
        consumer.close()
        say(f"consumed {seen}")


if __name__ == "__main__":
    main()
