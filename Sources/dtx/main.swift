print("dtx")
